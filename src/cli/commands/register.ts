/**
 * Writing the registry: `register` (keep an instance registered while this process runs, with
 * optional health checks), `deregister` (an operator removes someone else's instance, and its
 * registrar does not put it back: registry/deregister.ts).
 */
import { hostname, userInfo } from 'node:os';
import { Command, Option } from 'commander';
import { WatchedPrefix } from '../../contract/watched-prefix.js';
import { formatDuration } from '../../core/duration.js';
import { InvalidArgumentError } from '../../core/errors.js';
import { instanceEndpoint, type CheckInput, type Instance, type InstanceInput } from '../../core/model.js';
import { validateServiceName } from '../../core/names.js';
import { RemoteBackend } from '../../backends/remote/backend.js';
import { Registrar } from '../../registry/registrar.js';
import { deregisterInstance } from '../../registry/deregister.js';
import { onTerminate } from '../../integrations/process.js';
import { describeError, EXIT } from '../exit.js';
import { collect, duration, endpoint, giveUpAfter, integer, keyValues, ttl as parseTtl } from '../options.js';
import { note, out } from '../output.js';
import { giveUpOption, Outage } from '../outage.js';
import { layoutOptions, type CliContext, type LayoutFlags } from '../shared.js';

interface RegisterFlags extends LayoutFlags {
  id?: string;
  ttl: string;
  meta?: string[];
  tag?: string[];
  weight?: string;
  zone?: string;
  drain?: boolean;
  checkHttp?: string;
  checkTcp?: string;
  checkTtl?: string;
  interval?: string;
  timeout?: string;
  deregisterAfter?: string;
  checkMethod?: string;
  checkHeader?: string[];
  giveUpAfter: string;
}

/** The check the flags describe (at most one), validated later with the instance (core/checks.ts). */
function checkFrom(o: RegisterFlags): { check: CheckInput; ttlMs?: number } | undefined {
  const kinds = [o.checkHttp && '--check-http', o.checkTcp && '--check-tcp', o.checkTtl && '--check-ttl'].filter(Boolean);
  const extras = [o.interval && '--interval', o.timeout && '--timeout', o.checkMethod && '--check-method', o.checkHeader?.length && '--check-header', o.deregisterAfter && '--deregister-after'].filter(Boolean);
  if (kinds.length === 0) {
    if (extras.length) throw new InvalidArgumentError(`${extras.join(', ')} need a check: --check-http URL, --check-tcp host:port or --check-ttl duration`);
    return undefined;
  }
  if (kinds.length > 1) throw new InvalidArgumentError(`give one check: ${kinds.join(' and ')} given`);
  const check: CheckInput = {};
  let ttlMs: number | undefined;
  if (o.checkHttp) check.http = o.checkHttp;
  if (o.checkTcp) {
    endpoint(o.checkTcp, '--check-tcp');
    check.tcp = o.checkTcp;
  }
  if (o.checkTtl) {
    ttlMs = duration(o.checkTtl, 'check-ttl', { min: 1000, max: 24 * 3_600_000 });
    check.ttl = ttlMs;
    if (o.interval || o.timeout || o.checkMethod || o.checkHeader?.length) throw new InvalidArgumentError('--check-ttl takes no --interval, --timeout, --check-method or --check-header: this process reports it passing');
  } else {
    check.interval = duration(o.interval ?? '10s', 'interval', { min: 1000, max: 24 * 3_600_000 });
    if (o.timeout) check.timeout = duration(o.timeout, 'timeout', { min: 1, max: 24 * 3_600_000 });
  }
  if (o.checkMethod) {
    if (!o.checkHttp) throw new InvalidArgumentError('--check-method is for --check-http');
    check.method = o.checkMethod.toUpperCase();
  }
  if (o.checkHeader?.length) {
    if (!o.checkHttp) throw new InvalidArgumentError('--check-header is for --check-http');
    const header: Record<string, string[]> = {};
    for (const h of o.checkHeader) {
      const i = h.indexOf(':');
      if (i <= 0) throw new InvalidArgumentError(`invalid --check-header ${JSON.stringify(h)}: expected "Name: value"`);
      (header[h.slice(0, i).trim()] ??= []).push(h.slice(i + 1).trim());
    }
    check.header = header;
  }
  return { check, ...(ttlMs !== undefined ? { ttlMs } : {}) };
}

/** The roster server's checks API: report a TTL check passing (with the CLI's token and TLS). */
async function passCheck(server: RemoteBackend, checkId: string, signal: AbortSignal): Promise<void> {
  await server.request('POST', `/api/v1/checks/${encodeURIComponent(checkId)}/pass`, undefined, signal);
}

export function registerRegisterCommands(program: Command, ctx: CliContext): void {
  const register = program
    .command('register <service> <host:port>')
    .description('register an instance and keep it registered until interrupted (Ctrl-C deregisters); re-registers by itself after an outage')
    .addOption(new Option('--id <id>', 'instance id (default: host:port)'))
    .addOption(new Option('--ttl <duration>', 'session TTL: the instance disappears this long after this process dies').default('10s'))
    .addOption(new Option('--meta <key=value>', 'metadata entry (repeatable)').argParser(collect))
    .addOption(new Option('--tag <tag>', 'tag (repeatable)').argParser(collect))
    .addOption(new Option('--weight <n>', 'relative weight for weighted strategies (0-10000)'))
    .addOption(new Option('--zone <zone>', 'zone for zone-aware balancing'))
    .addOption(new Option('--drain', 'register in maintenance: status draining (pickers use it only when nothing else is up)'))
    .addOption(new Option('--check-http <url>', 'health check: GET this URL every --interval (2xx passing, 429 warning, else critical); roster server only'))
    .addOption(new Option('--check-tcp <host:port>', 'health check: connect every --interval; roster server only'))
    .addOption(new Option('--check-ttl <duration>', 'health check: critical unless passed within this time; this process passes it every TTL/2; roster server only'))
    .addOption(new Option('--interval <duration>', 'time between HTTP / TCP probes (default 10s, at least 1s)'))
    .addOption(new Option('--timeout <duration>', 'a probe slower than this is critical (default 10s)'))
    .addOption(new Option('--deregister-after <duration>', 'deregister and exit (code 1) when the check stays critical this long'))
    .addOption(new Option('--check-method <method>', 'HTTP method of --check-http (default GET)'))
    .addOption(new Option('--check-header <"Name: value">', 'HTTP header of --check-http (repeatable)').argParser(collect));
  giveUpOption(layoutOptions(register))
    .addHelpText(
      'after',
      [
        '',
        'The address needs a host and a port (127.0.0.1:9001, orders-1.internal:80, [::1]:9001).',
        'The check id is service:<instance id>. Exit status: 0 after Ctrl-C / SIGTERM (deregistered) or when an',
        'operator deregistered the instance (roster deregister); 3 after --give-up-after; 1 after --deregister-after.',
        'Example: roster register orders 127.0.0.1:9001 --meta version=1.4 --check-http http://127.0.0.1:9001/health --interval 5s',
      ].join('\n'),
    )
    .action(async (service: string, address: string, o: RegisterFlags) => {
      validateServiceName(service);
      const ep = endpoint(address);
      const ttl = parseTtl(o.ttl);
      const check = checkFrom(o);
      const giveUp = giveUpAfter(o.giveUpAfter);
      const deregisterAfter = o.deregisterAfter === undefined ? undefined : duration(o.deregisterAfter, 'deregister-after', { min: 1 });
      const url = ctx.backendUrl;
      if (check && !/^https?:\/\//i.test(url)) {
        throw new InvalidArgumentError(`health checks (--check-http, --check-tcp, --check-ttl) run in the roster server: ${url} is not one (use --backend http://host:port)`);
      }
      const input: InstanceInput = {
        service,
        ...ep,
        ...(o.id !== undefined ? { id: o.id } : {}),
        metadata: keyValues(o.meta, 'meta'),
        tags: o.tag ?? [],
        ...(o.weight !== undefined ? { weight: integer(o.weight, 'weight', 0, 10000) } : {}),
        ...(o.zone !== undefined ? { zone: o.zone } : {}),
        ...(o.drain ? { status: 'draining' as const } : {}),
        ...(check ? { checks: [check.check] } : {}),
      };
      const backend = await ctx.backend();
      const registrar = new Registrar(backend, { ttl, layout: ctx.layout(backend, o) });
      const terminated = onTerminate();
      const stop = new AbortController();
      let exitCode: number = EXIT.OK;
      let failure: unknown;
      let byOperator = false;
      const end = (code: number, e?: unknown) => {
        if (stop.signal.aborted) return;
        exitCode = code;
        failure = e;
        stop.abort();
      };
      const outage = new Outage(backend.url, giveUp, (e) => end(EXIT.UNAVAILABLE, e));
      let inst: Instance | undefined;
      const name = () => `${service}/${inst?.id ?? input.id ?? address}`;
      registrar.on('lost', (e) => outage.lost(e.cause, `registration of ${name()} lost; re-registering`));
      registrar.on('restored', () => outage.regained(`${name()} registered again`));
      registrar.on('repaired', (e) => note(`${service}/${e.instance.id} was ${e.reason === 'deleted' ? 'deleted' : e.reason === 'missing' ? 'missing' : 'left on an old session'}: put back`));
      registrar.on('error', (e) => {
        if (!outage.down) note(`${e.op} failed: ${describeError(e.error)}`);
      });
      registrar.on('deregistered', (e) => {
        if (e.reason !== 'operator') return;
        note(`${service}/${e.instance.id} was deregistered by an operator (roster deregister): not re-registering; exiting`);
        byOperator = true;
        end(EXIT.OK);
      });
      const cleanups: (() => void)[] = [];
      try {
        const reg = await registrar.register(input, { signal: ctx.deadline() });
        inst = reg.instance;
        const checkNote = check ? `, check ${inst.checks?.[0]?.id ?? ''}` : '';
        if (ctx.json) out(JSON.stringify({ registered: true, key: reg.key, instance: inst, ttl }));
        else out(`registered ${service}/${inst.id} at ${instanceEndpoint(inst)} (ttl ${formatDuration(ttl)}${inst.status === 'draining' ? ', draining' : ''}${checkNote}); Ctrl-C to deregister`);
        if (check?.ttlMs !== undefined) {
          if (!(backend instanceof RemoteBackend)) throw new InvalidArgumentError(`--check-ttl needs a roster server (http:// or https://), not ${backend.url}`);
          cleanups.push(ttlHeartbeat(backend, inst.checks![0]!.id, check.ttlMs, stop.signal));
        }
        if (deregisterAfter !== undefined) cleanups.push(watchOwnHealth(registrar, reg.key, inst, deregisterAfter, (why) => (note(why), end(EXIT.FAILURE))));
        await Promise.race([terminated, new Promise((resolve) => stop.signal.addEventListener('abort', resolve, { once: true }))]);
      } finally {
        for (const c of cleanups) c();
        outage.dispose();
        stop.abort();
        // Deregister, but never hang the exit on a backend that stopped answering: the key then
        // expires with its TTL.
        let timer: NodeJS.Timeout | undefined;
        const closed = await Promise.race([
          registrar.close().then(
            () => undefined,
            (e: unknown) => e ?? new Error('close failed'),
          ),
          new Promise<unknown>((resolve) => (timer = setTimeout(() => resolve(ctx.unreachable('deregistration not confirmed')), ctx.connectTimeout))),
        ]);
        clearTimeout(timer);
        if (closed !== undefined && failure === undefined) {
          failure = closed;
          note(`could not deregister ${name()}; it expires with its ${formatDuration(ttl)} TTL`);
        }
      }
      if (failure !== undefined) throw failure;
      if (inst && exitCode === EXIT.OK && !byOperator) out(ctx.json ? JSON.stringify({ deregistered: true, service, id: inst.id }) : `deregistered ${service}/${inst.id}`);
      process.exitCode = exitCode;
    });

  layoutOptions(
    program
      .command('deregister <service> <id>')
      .description('remove an instance someone else registered; its registrar does not put it back (it drops the instance)')
      .addOption(new Option('--hold <duration>', 'how long the deregistration intent stays for a registrar that is away (then it expires)').default('5m')),
  )
    .addHelpText(
      'after',
      [
        '',
        'roster deregister writes an intent (roster/deregistered/<service>/<id>, naming the key\'s session) and',
        'deletes the key. The owning registrar sees the delete, finds the intent and stops owning the instance',
        '(a `roster register` process says so and exits 0) instead of putting it back. A process that registers',
        'the same id later, under a new session, is not affected. Exit status 4 when there is no such instance.',
      ].join('\n'),
    )
    .action(async (service: string, id: string, o: LayoutFlags & { hold: string }) => {
      validateServiceName(service);
      const hold = parseTtl(o.hold, 'hold');
      const backend = await ctx.backend();
      let by = hostname();
      try {
        by = `${userInfo().username}@${by}`;
      } catch {
        /* no user name: the host alone */
      }
      const r = await deregisterInstance(backend, service, id, { layout: ctx.layout(backend, o), hold, by, signal: ctx.deadline() });
      if (ctx.json) out(JSON.stringify({ deregistered: true, key: r.key, instance: r.instance, ...(r.session ? { session: r.session } : {}) }));
      else out(`deregistered ${service}/${id} (${instanceEndpoint(r.instance)})${r.session ? `; its registrar (session ${r.session}) will not put it back` : ''}`);
    });
}

/** --check-ttl: pass the check about every TTL/2 while registered. */
function ttlHeartbeat(server: RemoteBackend, checkId: string, ttlMs: number, signal: AbortSignal): () => void {
  let failing = false;
  const beat = async () => {
    try {
      await passCheck(server, checkId, AbortSignal.any([signal, AbortSignal.timeout(Math.max(500, ttlMs / 2))]));
      if (failing) note(`check ${checkId}: passing again`);
      failing = false;
    } catch (e) {
      if (signal.aborted) return;
      if (!failing) note(`check ${checkId}: could not report passing: ${describeError(e)}; retrying every ${formatDuration(Math.round(ttlMs / 2))}`);
      failing = true;
    }
  };
  void beat();
  const t = setInterval(() => void beat(), Math.max(250, Math.floor(ttlMs / 2)));
  return () => clearInterval(t);
}

/** --deregister-after: follow our own instance's health; critical for `after` → `giveUp`. */
function watchOwnHealth(registrar: Registrar, key: string, inst: Instance, after: number, giveUp: (why: string) => void): () => void {
  const layout = registrar.layout;
  const view = new WatchedPrefix(registrar.backend, layout.servicePrefix(inst.service), { filter: (k) => k === key, keepProcessAlive: false });
  let timer: NodeJS.Timeout | undefined;
  view.on('change', () => {
    const kv = view.items.get(key);
    let critical: boolean;
    try {
      critical = kv !== undefined && layout.decode(inst.service, kv)?.health === 'critical';
    } catch {
      critical = false;
    }
    if (critical && timer === undefined) {
      timer = setTimeout(() => giveUp(`${inst.service}/${inst.id} critical for ${formatDuration(after)} (--deregister-after): deregistering`), after);
    } else if (!critical && timer !== undefined) {
      clearTimeout(timer);
      timer = undefined;
    }
  });
  return () => {
    clearTimeout(timer);
    view.close();
  };
}
