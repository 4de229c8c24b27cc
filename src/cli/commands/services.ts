/**
 * Reading the registry: `ls` (services, or one service's instances), `watch` (a service's changes
 * as they happen), `pick` (what a client would choose).
 */
import { Command, Option } from 'commander';
import type { KeyValue } from '../../contract/types.js';
import { WatchedPrefix, type ViewChange } from '../../contract/watched-prefix.js';
import { InvalidArgumentError, isRosterError, NotFoundError } from '../../core/errors.js';
import { instanceEndpoint, type Instance } from '../../core/model.js';
import { nameRoot, validateServiceName } from '../../core/names.js';
import type { Layout } from '../../registry/layout.js';
import { ServiceCache } from '../../registry/cache.js';
import { strategy as makeStrategy } from '../../balance/index.js';
import { terminationSignal } from '../../integrations/process.js';
import { describeError } from '../exit.js';
import { deletionKind, describeChange, describeInstance, filterFrom, filterOptions, instanceJson, lsRow, LS_HEADER, LS_WIDE_HEADER, matches, type FilterFlags, type Row } from '../instances.js';
import { integer, giveUpAfter } from '../options.js';
import { note, out, printTable, timestamp } from '../output.js';
import { giveUpOption, Outage } from '../outage.js';
import { layoutOptions, type CliContext, type LayoutFlags } from '../shared.js';

type ListFlags = FilterFlags & LayoutFlags;

/** Decode an entry; one the layout cannot decode is reported on stderr and counted, not dropped silently. */
function decodeOrReport(layout: Layout, service: string, kv: KeyValue): Instance | undefined | Error {
  try {
    const i = layout.decode(service, kv);
    return i && i.service === service ? i : undefined;
  } catch (e) {
    note(`skipping ${kv.key}: ${describeError(e)}`);
    return e as Error;
  }
}

export function registerServiceCommands(program: Command, ctx: CliContext): void {
  layoutOptions(filterOptions(program.command('ls [service]')))
    .description("list services with their instance counts, or one service's instances (ID, ADDRESS, HEALTH, STATUS, AGE, TTL)")
    .addHelpText('after', '\nExit status 4 when the service has no instance (matching the filters).\nExamples: roster ls; roster ls orders -o wide; roster ls orders --health passing --tag blue')
    .action(async (service: string | undefined, o: ListFlags) => {
      const filter = filterFrom(o);
      if (service !== undefined) validateServiceName(service);
      const backend = await ctx.backend();
      const layout = ctx.layout(backend, o);
      // Where the layout's instances live: the backend's keys, or a store of its own (Consul's catalog).
      const store = layout.store?.(backend) ?? backend;
      if (service === undefined) {
        const { items } = await store.list(layout.root, { signal: ctx.deadline() });
        // Count decoded instances per service (not keys): Curator's parent znode and deeper keys
        // are not instances; an entry the layout cannot decode is reported and counted as skipped.
        const counts = new Map<string, { instances: number; skipped: number }>();
        for (const kv of items) {
          const name = kv.key.slice(layout.root.length).split('/')[0]!;
          if (name === '') continue;
          const c = counts.get(name) ?? { instances: 0, skipped: 0 };
          const got = decodeOrReport(layout, name, kv);
          if (got instanceof Error) c.skipped++;
          else if (got && matches(got, filter)) c.instances++;
          counts.set(name, c);
        }
        const rows = [...counts].filter(([, c]) => c.instances > 0 || c.skipped > 0).sort(([a], [b]) => (a < b ? -1 : 1));
        if (rows.length === 0 && nameRoot(backend) === '' && backend.kind === 'etcd') {
          note(`nothing under '${layout.root}' in ${backend.url} (no trailing '/': etcd keys without a leading '/'); Go programs usually write '/${layout.root}...': use --backend ${backend.url}/`);
        }
        if (ctx.json) out(JSON.stringify(rows.map(([name, c]) => ({ service: name, instances: c.instances, skipped: c.skipped }))));
        else {
          const anySkipped = rows.some(([, c]) => c.skipped > 0);
          printTable(anySkipped ? ['SERVICE', 'INSTANCES', 'SKIPPED'] : ['SERVICE', 'INSTANCES'], rows.map(([name, c]) => (anySkipped ? [name, String(c.instances), String(c.skipped)] : [name, String(c.instances)])));
        }
        return;
      }
      const { items } = await store.list(layout.servicePrefix(service), { signal: ctx.deadline() });
      const all: Row[] = [];
      for (const kv of items) {
        const got = decodeOrReport(layout, service, kv);
        if (got && !(got instanceof Error)) all.push({ instance: got, kv });
      }
      const rows = all.filter((r) => matches(r.instance, filter));
      if (ctx.json) out(JSON.stringify(rows.map(instanceJson)));
      else if (rows.length > 0) printTable(ctx.output === 'wide' ? LS_WIDE_HEADER : LS_HEADER, rows.map((r) => lsRow(r, ctx.output === 'wide')));
      if (rows.length === 0) {
        throw new NotFoundError(
          all.length === 0
            ? `no instances of service ${JSON.stringify(service)} in ${backend.url} (under '${layout.servicePrefix(service)}')`
            : `none of the ${all.length} instance(s) of service ${JSON.stringify(service)} matches the filters`,
        );
      }
    });

  giveUpOption(layoutOptions(filterOptions(program.command('watch <service>'))))
    .description("print a service's instances, then one line per change (time, ADD / UPDATE / DELETE / EXPIRE) until interrupted")
    .addHelpText(
      'after',
      [
        '',
        'DELETE: deregistered on purpose (by its process, or roster deregister). EXPIRE: removed without a',
        'deregistration: its session ended (the process died or lost the registry), or the key was deleted by hand.',
        'SYNCED follows the initial list and every re-sync after an outage (lost / regained are said on stderr).',
      ].join('\n'),
    )
    .action(async (service: string, o: ListFlags & { giveUpAfter: string }) => {
      validateServiceName(service);
      const filter = filterFrom(o);
      const giveUp = giveUpAfter(o.giveUpAfter);
      const backend = await ctx.backend();
      const layout = ctx.layout(backend, o);
      const term = terminationSignal();
      const view = new WatchedPrefix(layout.store?.(backend) ?? backend, layout.servicePrefix(service), { signal: term.signal });
      const decoded = new Map<string, Instance>();
      let chain = Promise.resolve();
      const print = (type: string, revision: number, inst: Instance, extra = '', change?: string) => {
        if (ctx.json) out(JSON.stringify({ time: timestamp(), type, revision, instance: inst, ...(change ? { change } : {}), ...(extra ? { reason: extra } : {}) }));
        else out(`${timestamp()}  ${type.toUpperCase().padEnd(8)}${describeInstance(inst)}${change ? `  (${change})` : ''}${extra ? `  (${extra})` : ''}`);
      };
      const onChange = (c: ViewChange) => {
        // Decode now (the view moves on); print in order, after any deletion's lookup.
        const steps: (() => Promise<void> | void)[] = [];
        for (const ch of c.changes) {
          const old = decoded.get(ch.key);
          const oldIn = old !== undefined && matches(old, filter);
          if (ch.type === 'put') {
            const got = decodeOrReport(layout, service, ch.kv);
            const inst = got instanceof Error ? undefined : got;
            if (inst) decoded.set(ch.key, inst);
            else decoded.delete(ch.key);
            const newIn = inst !== undefined && matches(inst, filter);
            if (newIn && !oldIn) steps.push(() => print('add', c.revision, inst, old ? 'now matches the filters' : ''));
            else if (newIn && oldIn) {
              const what = describeChange(old, inst);
              if (what) steps.push(() => print('update', c.revision, inst, '', what));
            } else if (oldIn) steps.push(() => print('delete', c.revision, old, inst ? 'no longer matches the filters' : 'no longer decodable'));
          } else {
            decoded.delete(ch.key);
            if (oldIn) steps.push(async () => print(await deletionKind(backend, layout, service, ch.prev, old.id), c.revision, old));
          }
        }
        if (c.resync) {
          const n = [...decoded.values()].filter((i) => matches(i, filter)).length;
          steps.push(() => (ctx.json ? out(JSON.stringify({ time: timestamp(), type: 'synced', revision: c.revision, instances: n })) : out(`${timestamp()}  SYNCED  ${n} instance(s)  rev=${c.revision}`)));
        }
        for (const s of steps) chain = chain.then(s);
      };
      try {
        // First contact within --connect-timeout; afterwards outages are ridden out.
        view.on('change', onChange);
        await view.ready({ signal: AbortSignal.any([ctx.deadline(), term.signal]), failFast: true });
        await new Promise<void>((resolve, reject) => {
          const outage = new Outage(backend.url, giveUp, (e) => {
            reject(e); // before close(): its `ended` would resolve
            view.close();
          });
          view.on('stale', ({ error }) => outage.lost(error, `watching ${service}`));
          view.on('fresh', () => outage.regained(`watching ${service}`));
          view.on('change', ({ resync }) => {
            if (resync) outage.regained(`watching ${service}, re-synced`);
          });
          view.on('ended', ({ error }) => {
            outage.dispose();
            if (error === undefined || term.signal.aborted) resolve();
            else reject(error);
          });
          if (view.ended) resolve();
        });
      } catch (e) {
        if (!term.signal.aborted) throw e;
      } finally {
        view.close();
        term.dispose();
        await chain;
      }
    });

  layoutOptions(
    filterOptions(
      program
        .command('pick <service>')
        .description('choose instance(s) the way a client would, and print their addresses (host:port)')
        .addOption(new Option('--strategy <name>', 'round-robin, random, weighted, least-outstanding, p2c, consistent-hash, zone-aware').default('round-robin'))
        .addOption(new Option('--key <key>', 'sticky key for consistent-hash'))
        .addOption(new Option('--local-zone <zone>', 'local zone for zone-aware'))
        .addOption(new Option('-n, --count <n>', 'how many picks').default('1')),
    ),
  )
    .addHelpText('after', '\nExit status 4 when there is no instance to pick.\nExample: roster pick orders --strategy p2c -n 10 --health passing')
    .action(async (service: string, o: ListFlags & { strategy: string; key?: string; localZone?: string; count: string }) => {
      validateServiceName(service);
      const n = integer(o.count, 'count', 1, 1_000_000);
      const filter = filterFrom(o);
      const strategy = makeStrategy(o.strategy, o.localZone ? { zone: o.localZone } : {});
      if (o.strategy === 'consistent-hash' && o.key === undefined) throw new InvalidArgumentError('--strategy consistent-hash needs --key');
      const backend = await ctx.backend();
      // A one-shot read: an unreachable registry is an error now, not a wait.
      const cache = new ServiceCache(backend, service, { layout: ctx.layout(backend, o), ...(filter ? { filter } : {}), keepProcessAlive: false });
      cache.on('error', (e) => {
        if (e.op === 'decode') note(`skipping ${e.key}: ${describeError(e.error)}`);
      });
      try {
        await cache.ready({ failFast: true, signal: ctx.deadline() });
        const picker = strategy.build(cache.instances);
        const picks: { id: string; endpoint: string }[] = [];
        for (let i = 0; i < n; i++) {
          const p = picker.pick(o.key);
          if (ctx.json) picks.push({ id: p.instance.id, endpoint: instanceEndpoint(p.instance) });
          else out(instanceEndpoint(p.instance));
          p.done();
        }
        if (ctx.json) out(JSON.stringify(picks));
      } catch (e) {
        if (isRosterError(e, 'NO_INSTANCE')) throw new NotFoundError(cache.describeEmpty(), { cause: e });
        throw e;
      } finally {
        await cache.close();
      }
    });
}
