import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import type { Backend, KeyValue, WatchEvent } from '../../contract/types.js';
import { WatchedPrefix } from '../../contract/watched-prefix.js';
import { NotFoundError } from '../../core/errors.js';
import { instanceEndpoint, type Instance } from '../../core/model.js';
import { validateKey, validatePrefix, validateServiceName } from '../../core/names.js';
import type { Layout } from '../../registry/layout.js';
import { ServiceCache } from '../../registry/cache.js';
import { onTerminate } from '../../integrations/process.js';
import { layoutFrom, layoutOptions, out, parsePositiveInt } from '../shared.js';

import { storageFrom, storageOptions } from './storage-options.js';
import { securityFrom, securityOptions, type SecurityFlags } from './security-options.js';

function describeInstance(i: Instance): string {
  const parts = [`${i.service}/${i.id}`, instanceEndpoint(i)];
  if (i.zone) parts.push(`zone=${i.zone}`);
  if (i.weight !== 1) parts.push(`weight=${i.weight}`);
  if (i.status !== 'up') parts.push(`status=${i.status}`);
  if (i.tags.length) parts.push(`tags=${i.tags.join(',')}`);
  const md = Object.entries(i.metadata);
  if (md.length) parts.push(md.map(([k, v]) => `${k}=${v}`).join(','));
  return parts.join('  ');
}

/** Decode an entry; one the layout cannot decode is reported on stderr, not dropped silently. */
function decodeOrReport(layout: Layout, service: string, kv: KeyValue): Instance | undefined {
  try {
    return layout.decode(service, kv);
  } catch (e) {
    process.stderr.write(`roster: skipping ${kv.key}: ${(e as Error).message}\n`);
    return undefined;
  }
}

export function registerCoreCommands(program: Command, getBackend: () => Promise<Backend>): void {
  securityOptions(storageOptions(program
    .command('server')
    .description('run the roster server (registry API, watch streams, metrics, dashboard)')
    .option('--host <host>', 'address to listen on', '127.0.0.1')
    .option('--port <port>', 'port to listen on', '8470')
    .option('--data-dir <dir>', 'where to keep data', './.roster')))
    .action(async (_opts: unknown, cmd: Command) => {
      const opts = cmd.optsWithGlobals<{ host: string; port: string; dataDir: string } & Parameters<typeof storageFrom>[0] & SecurityFlags>();
      const port = parsePositiveInt(opts.port, 'port', 0, 65535);
      const { startServer } = await import('../../server/index.js');
      // Registered instances are long-lived: V8's young generation, grown to its 32 MB default under
      // load, would cost more RSS than 100,000 instances' data. Kept at its initial 1 MB it costs no
      // measurable CPU (bench/: RSS per instance at 100k 800 → 530 B).
      (await import('node:v8')).setFlagsFromString('--semi-space-growth-factor=1');
      // The dashboard ships in the package's ui/ folder (dist/cli/commands → ../../../ui).
      const uiDir = fileURLToPath(new URL('../../../ui/', import.meta.url));
      const server = await startServer({ host: opts.host, port, dataDir: opts.dataDir, storage: storageFrom(opts), ...securityFrom(opts), ...(existsSync(uiDir) ? { uiDir } : {}) });
      process.stdout.write(`roster server listening on ${server.url} (data: ${opts.dataDir}, dashboard: ${server.url}/ui)\n`);
      const a = server.auth;
      if (!a.enabled) process.stdout.write('auth is off: every client that reaches the server may do anything (--auth on turns tokens on)\n');
      else if (a.tokenFile) process.stdout.write(`auth is on: ${a.created ? 'a new' : 'the'} bootstrap admin token is in ${a.tokenFile} (roster --token-file ${a.tokenFile} ...)\n`);
      else process.stdout.write(`auth is on${a.note ? `: ${a.note}` : ''}\n`);
      await onTerminate();
      process.stderr.write('roster: shutting down\n');
      await server.close();
    });

  layoutOptions(
    program
      .command('ls [service]')
      .description("list services, or one service's instances")
      .option('--json', 'print JSON'),
  ).action(async (service: string | undefined, opts: { json?: boolean; layout?: string; root?: string }) => {
    const layout = layoutFrom(opts);
    const backend = await getBackend();
    if (service === undefined) {
      // One consistent snapshot of every service (the view's first sync); an unreachable backend
      // is an error now, not a wait.
      const view = new WatchedPrefix(backend, layout.root, { retry: false });
      try {
        await view.ready({ failFast: true });
        const counts = new Map<string, number>();
        for (const key of view.items.keys()) {
          const name = key.slice(layout.root.length).split('/')[0]!;
          counts.set(name, (counts.get(name) ?? 0) + 1);
        }
        const rows = [...counts.entries()].sort(([a], [b]) => (a < b ? -1 : 1));
        if (opts.json) out(JSON.stringify(rows.map(([name, instances]) => ({ service: name, instances }))));
        else for (const [name, n] of rows) out(`${name}\t${n}`);
      } finally {
        view.close();
      }
      return;
    }
    validateServiceName(service);
    const cache = new ServiceCache(backend, service, { layout });
    cache.on('error', (e) => {
      if (e.op === 'decode') process.stderr.write(`roster: skipping ${e.key}: ${(e.error as Error).message}\n`);
    });
    try {
      await cache.ready({ failFast: true });
      if (opts.json) out(JSON.stringify(cache.instances));
      else for (const i of cache.instances) out(describeInstance(i));
    } finally {
      await cache.close();
    }
  });

  layoutOptions(
    program
      .command('watch <service>')
      .description("print a service's instances, then one line per change until interrupted")
      .option('--json', 'print NDJSON: one object per event with type and revision'),
  ).action(async (service: string, opts: { json?: boolean; layout?: string; root?: string }) => {
    validateServiceName(service);
    const layout = layoutFrom(opts);
    const backend = await getBackend();
    const ac = new AbortController();
    void onTerminate().then(() => ac.abort());
    // The service's WatchedPrefix: it rides out outages (re-syncing as one batch of differences)
    // and ends only on Ctrl-C or a failure it cannot retry.
    const view = new WatchedPrefix(backend, layout.servicePrefix(service), { signal: ac.signal });
    let first = true;
    view.on('change', (c) => {
      const json = opts.json === true;
      if (c.resync && !first && json) out(JSON.stringify({ type: 'reset', revision: c.revision }));
      for (const ch of c.changes) printServiceChange(ch.type, ch.type === 'put' ? ch.kv : ch.prev, c.revision, layout, service, json);
      if (c.resync) {
        first = false;
        out(json ? JSON.stringify({ type: 'synced', revision: c.revision }) : `= synced: ${countInstances(view, layout, service)} instance(s)  rev=${c.revision}`);
      }
    });
    try {
      await new Promise<void>((resolve, reject) => view.on('ended', ({ error }) => (error === undefined || ac.signal.aborted ? resolve() : reject(error))));
    } finally {
      view.close();
    }
  });

  const kv = program.command('kv').description('read and write keys');
  kv.command('get <key>')
    .option('--json', 'print the key with its revisions as JSON')
    .action(async (key: string, opts: { json?: boolean }) => {
      validateKey(key);
      const got = await (await getBackend()).get(key);
      if (!got) throw new NotFoundError(`key ${JSON.stringify(key)} not found`);
      out(opts.json ? JSON.stringify(got) : got.value);
    });
  kv.command('put <key> <value>')
    .option('--if-absent', 'only create; fail if the key exists')
    .option('--if-version <n>', 'compare-and-set: only if the key is at this version (0 = absent)')
    .action(async (key: string, value: string, opts: { ifAbsent?: boolean; ifVersion?: string }) => {
      const ifVersion = opts.ifVersion === undefined ? undefined : parsePositiveInt(opts.ifVersion, 'if-version', 0, Number.MAX_SAFE_INTEGER);
      const r = await (await getBackend()).put(key, value, {
        ...(opts.ifAbsent ? { ifAbsent: true } : {}),
        ...(ifVersion !== undefined ? { ifVersion } : {}),
      });
      out(`OK revision=${r.revision} version=${r.kv.version}`);
    });
  kv.command('del <key>')
    .option('--if-version <n>', 'only if the key is at this version')
    .action(async (key: string, opts: { ifVersion?: string }) => {
      const ifVersion = opts.ifVersion === undefined ? undefined : parsePositiveInt(opts.ifVersion, 'if-version', 0, Number.MAX_SAFE_INTEGER);
      const r = await (await getBackend()).delete(key, ifVersion !== undefined ? { ifVersion } : {});
      if (!r.deleted) throw new NotFoundError(`key ${JSON.stringify(key)} not found`);
      out(`OK revision=${r.revision}`);
    });
  kv.command('ls [prefix]')
    .option('--json', 'print JSON')
    .action(async (prefix: string | undefined, opts: { json?: boolean }) => {
      const r = await (await getBackend()).list(validatePrefix(prefix ?? ''));
      if (opts.json) out(JSON.stringify(r));
      else for (const i of r.items) out(`${i.key}\t${i.value}`);
    });
  kv.command('watch <prefix>')
    .option('--json', 'print NDJSON')
    .option('--from-revision <rev>', 'resume after this revision instead of starting with a snapshot')
    .action(async (prefix: string, opts: { json?: boolean; fromRevision?: string }) => {
      validatePrefix(prefix);
      const fromRevision = opts.fromRevision === undefined ? undefined : parsePositiveInt(opts.fromRevision, 'from-revision', 0, Number.MAX_SAFE_INTEGER);
      const ac = new AbortController();
      void onTerminate().then(() => ac.abort());
      try {
        const w = (await getBackend()).watch(prefix, { signal: ac.signal, ...(fromRevision !== undefined ? { fromRevision } : {}) });
        for await (const ev of w) out(opts.json ? JSON.stringify(ev) : describeKvEvent(ev));
      } catch (e) {
        if (!ac.signal.aborted) throw e;
      }
    });
}

function describeKvEvent(ev: WatchEvent): string {
  switch (ev.type) {
    case 'put': return `PUT ${ev.key} ${JSON.stringify(ev.kv.value)} rev=${ev.revision}`;
    case 'delete': return `DELETE ${ev.key} rev=${ev.revision}`;
    case 'synced': return `SYNCED rev=${ev.revision}`;
    case 'reset': return `RESET rev=${ev.revision} keys=${ev.items.length}`;
  }
}

function decodeQuietly(layout: Layout, service: string, kv: KeyValue): Instance | undefined {
  try {
    return layout.decode(service, kv);
  } catch {
    return undefined;
  }
}

function countInstances(view: WatchedPrefix, layout: Layout, service: string): number {
  let n = 0;
  for (const kv of view.items.values()) {
    if (decodeQuietly(layout, service, kv)) n++; // undecodable ones were reported when they arrived
  }
  return n;
}

function printServiceChange(type: 'put' | 'delete', kv: KeyValue, revision: number, layout: Layout, service: string, json: boolean): void {
  // A put that cannot be decoded is reported; the delete of such an entry was reported already.
  const inst = type === 'put' ? decodeOrReport(layout, service, kv) : decodeQuietly(layout, service, kv);
  if (!inst) return;
  if (type === 'put') out(json ? JSON.stringify({ type: 'put', revision, instance: inst }) : `+ ${describeInstance(inst)}  rev=${revision}`);
  else out(json ? JSON.stringify({ type: 'delete', revision, instance: inst }) : `- ${inst.service}/${inst.id}  rev=${revision}`);
}
