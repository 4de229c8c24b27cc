/**
 * `roster kv get|put|del|ls|watch`: the key space under the registry. Keys and prefixes may be
 * spelled as Go programs spell them (`/config/x` on etcd://h:2379/; docs/interop.md).
 */
import { Command, Option } from 'commander';
import type { Backend, WatchEvent } from '../../contract/types.js';
import { backoff, sleep } from '../../core/async.js';
import { formatDuration } from '../../core/duration.js';
import { InvalidArgumentError, isRosterError, NotFoundError } from '../../core/errors.js';
import { validateKey, validateValue } from '../../core/names.js';
import { terminationSignal } from '../../integrations/process.js';
import { giveUpAfter, integer, ttl as parseTtl } from '../options.js';
import { out, timestamp } from '../output.js';
import { giveUpOption, Outage } from '../outage.js';
import type { CliContext } from '../shared.js';

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** A value for a `key<TAB>value` line: one line, whatever it holds. */
function oneLine(v: string): string {
  return /[\n\r\t]/.test(v) ? JSON.stringify(v) : v;
}

function version(v: string | undefined, flag: string): number | undefined {
  return v === undefined ? undefined : integer(v, flag, 0, Number.MAX_SAFE_INTEGER);
}

export function registerKvCommands(program: Command, ctx: CliContext): void {
  const kv = program.command('kv').description('read, write and watch keys');
  const key = (b: Backend, k: string) => validateKey(k.startsWith('/') ? ctx.name(b, k, 'key') : k);
  const prefix = (b: Backend, p: string | undefined) => (p === undefined || p === '' ? '' : ctx.name(b, p, 'prefix'));

  kv.command('get <key>')
    .description("print a key's value (-o json: with its revisions); with --prefix, every key under it")
    .addOption(new Option('--prefix', 'treat <key> as a prefix: print key<TAB>value lines'))
    .addHelpText('after', '\nExit status 4 when the key (or, with --prefix, every key under it) does not exist.')
    .action(async (k: string, o: { prefix?: boolean }) => {
      const b = await ctx.backend();
      if (o.prefix) {
        const p = prefix(b, k);
        const r = await b.list(p, { signal: ctx.deadline() });
        if (ctx.json) out(JSON.stringify(r));
        else for (const i of r.items) out(`${i.key}\t${oneLine(i.value)}`);
        if (r.items.length === 0) throw new NotFoundError(`no key under ${JSON.stringify(p)}`);
        return;
      }
      const got = await b.get(key(b, k), { signal: ctx.deadline() });
      if (!got) throw new NotFoundError(`key ${JSON.stringify(k)} not found`);
      out(ctx.json ? JSON.stringify(got) : got.value);
    });

  kv.command('put <key> [value]')
    .description('write a key; the value "-" (or none) is read from stdin')
    .addOption(new Option('--ttl <duration>', 'the key is deleted this long after this command (a lease nobody renews)'))
    .addOption(new Option('--if-absent', 'only create; fail (exit 5) if the key exists'))
    .addOption(new Option('--if-version <n>', 'compare-and-set: only if the key is at this version (0 = absent); else exit 5'))
    .addHelpText('after', "\nExamples: roster kv put config/orders '{\"limit\":10}'; roster kv put config/orders - < limits.json; roster kv put ping up --ttl 30s")
    .action(async (k: string, value: string | undefined, o: { ttl?: string; ifAbsent?: boolean; ifVersion?: string }) => {
      const ttl = o.ttl === undefined ? undefined : parseTtl(o.ttl);
      const ifVersion = version(o.ifVersion, 'if-version');
      if (o.ifAbsent && ifVersion !== undefined) throw new InvalidArgumentError('give --if-absent or --if-version, not both');
      const v = validateValue(value === undefined || value === '-' ? await readStdin() : value);
      const b = await ctx.backend();
      const signal = ctx.deadline();
      const session = ttl === undefined ? undefined : await b.session({ ttl, signal });
      try {
        const r = await b.put(key(b, k), v, {
          signal,
          ...(session ? { session } : {}),
          ...(o.ifAbsent ? { ifAbsent: true } : {}),
          ...(ifVersion !== undefined ? { ifVersion } : {}),
        });
        if (ctx.json) out(JSON.stringify({ revision: r.revision, kv: r.kv, ...(session ? { expiresIn: session.ttl } : {}) }));
        else out(`OK revision=${r.revision} version=${r.kv.version}${session ? ` (expires ${formatDuration(session.ttl)} after this command)` : ''}`);
      } finally {
        // Nobody renews the lease: the key lives for the TTL, then goes (etcdctl put --lease).
        session?.orphan();
      }
    });

  kv.command('del <key>')
    .description('delete a key (with --prefix: every key under it)')
    .addOption(new Option('--prefix', 'delete every key under <key>'))
    .addOption(new Option('--if-version <n>', 'only if the key is at this version; else exit 5'))
    .addHelpText('after', '\nExit status 4 when there was nothing to delete.')
    .action(async (k: string, o: { prefix?: boolean; ifVersion?: string }) => {
      const ifVersion = version(o.ifVersion, 'if-version');
      const b = await ctx.backend();
      const signal = ctx.deadline();
      if (o.prefix) {
        if (ifVersion !== undefined) throw new InvalidArgumentError('--if-version is for one key, not --prefix');
        const p = prefix(b, k);
        const { items } = await b.list(p, { signal });
        let n = 0;
        let rev = 0;
        for (const i of items) {
          const r = await b.delete(i.key, { signal, ifVersion: i.version }).catch((e: unknown) => {
            if (isRosterError(e, 'CONFLICT')) return { deleted: false, revision: 0 }; // changed meanwhile: not ours to delete
            throw e;
          });
          if (r.deleted) n++;
          rev = Math.max(rev, r.revision);
        }
        if (n === 0) throw new NotFoundError(`no key under ${JSON.stringify(p)}`);
        out(ctx.json ? JSON.stringify({ deleted: n, revision: rev }) : `OK deleted=${n} revision=${rev}`);
        return;
      }
      const r = await b.delete(key(b, k), { signal, ...(ifVersion !== undefined ? { ifVersion } : {}) });
      if (!r.deleted) throw new NotFoundError(`key ${JSON.stringify(k)} not found`);
      out(ctx.json ? JSON.stringify(r) : `OK revision=${r.revision}`);
    });

  kv.command('ls [prefix]')
    .description('list keys and values under a prefix (key<TAB>value; -o json: the listing with revisions)')
    .action(async (p: string | undefined) => {
      const b = await ctx.backend();
      const r = await b.list(prefix(b, p), { signal: ctx.deadline() });
      if (ctx.json) out(JSON.stringify(r));
      else for (const i of r.items) out(`${i.key}\t${oneLine(i.value)}`);
    });

  giveUpOption(kv.command('watch <prefix>'))
    .description('print the keys under a prefix, then one line per change (time, PUT / DELETE) until interrupted; resumes across outages')
    .addOption(new Option('--from-revision <rev>', 'start after this revision instead of with the current keys'))
    .action(async (p: string, o: { fromRevision?: string; giveUpAfter: string }) => {
      let from = version(o.fromRevision, 'from-revision');
      const giveUp = giveUpAfter(o.giveUpAfter);
      const b = await ctx.backend();
      const pre = prefix(b, p);
      const term = terminationSignal();
      const stop = new AbortController();
      const signal = AbortSignal.any([term.signal, stop.signal]);
      let failure: unknown;
      const outage = new Outage(b.url, giveUp, (e) => {
        failure = e;
        stop.abort(e);
      });
      const print = (ev: WatchEvent) => {
        if (ctx.json) return out(JSON.stringify({ time: timestamp(), ...ev }));
        switch (ev.type) {
          case 'put':
            return out(`${timestamp()}  PUT     ${ev.key}  ${oneLine(ev.kv.value)}  rev=${ev.revision}`);
          case 'delete':
            return out(`${timestamp()}  DELETE  ${ev.key}  rev=${ev.revision}`);
          case 'synced':
            return out(`${timestamp()}  SYNCED  rev=${ev.revision}`);
          case 'reset':
            return out(`${timestamp()}  RESET   ${ev.items.length} key(s)  rev=${ev.revision}`);
        }
      };
      let first = true;
      let attempt = 0;
      try {
        // The backend resumes its stream across reconnects by itself; when a stream ends with an
        // error anyway (a server that restarted without our history, a client-side failure) the
        // watch is re-opened after the last revision printed, so nothing is missed or repeated.
        while (!signal.aborted) {
          const w = b.watch(pre, { signal, ...(from !== undefined ? { fromRevision: from } : {}) });
          const firstContact = first ? ctx.deadline() : undefined;
          const onDeadline = () => w.close();
          firstContact?.addEventListener('abort', onDeadline, { once: true });
          let firstFailure: unknown;
          w.on('status', (st) => {
            if (first && !st.connected) {
              // First contact failed: that is an error now, not an outage to ride out.
              firstFailure = st.error;
              w.close();
              return;
            }
            if (st.connected) outage.regained(`watching ${pre || '(all keys)'}`);
            else outage.lost(st.error, `watching ${pre || '(all keys)'}`);
          });
          try {
            for await (const ev of w) {
              if (first) {
                first = false;
                firstContact?.removeEventListener('abort', onDeadline);
              }
              if (attempt > 0) outage.regained(`watching ${pre || '(all keys)'}`);
              attempt = 0;
              print(ev);
              from = Math.max(from ?? 0, ev.revision);
            }
            if (firstFailure !== undefined) throw firstFailure;
            if (firstContact?.aborted) throw firstContact.reason;
          } catch (e) {
            if (signal.aborted) break;
            if (first) throw firstFailure ?? (firstContact?.aborted ? firstContact.reason : e);
            if (isRosterError(e, 'INVALID_ARGUMENT')) throw e;
            outage.lost(e, `watching ${pre || '(all keys)'}`);
          } finally {
            firstContact?.removeEventListener('abort', onDeadline);
            w.close();
          }
          if (signal.aborted) break;
          await sleep(backoff(attempt++, 100, 5000), signal).catch(() => undefined);
        }
      } finally {
        outage.dispose();
        term.dispose();
      }
      if (failure !== undefined) throw failure;
    });
}
