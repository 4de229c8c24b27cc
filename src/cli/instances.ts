/**
 * Instances as the CLI shows and filters them: the filter flags shared by `ls`, `watch` and
 * `pick`, the columns of `ls`, the facts a layout stores beside the instance (age, session TTL),
 * and how a deletion is told from an expiry.
 */
import { Command, Option } from 'commander';
import type { Backend, KeyValue } from '../contract/types.js';
import { formatDuration } from '../core/duration.js';
import { InvalidArgumentError } from '../core/errors.js';
import { isHealthStatus } from '../core/checks.js';
import { instanceEndpoint, type HealthStatus, type Instance } from '../core/model.js';
import type { CacheFilter } from '../registry/cache.js';
import type { Layout } from '../registry/layout.js';
import { intentKey, parseIntent } from '../registry/deregister.js';
import { collect, keyValues } from './options.js';
import { age } from './output.js';

export interface FilterFlags {
  tag?: string[];
  meta?: string[];
  health?: string[];
  zone?: string;
}

export function filterOptions(cmd: Command): Command {
  return cmd
    .addOption(new Option('--tag <tag>', 'only instances with this tag (repeatable: all of them)').argParser(collect))
    .addOption(new Option('--meta <key=value>', 'only instances with this metadata value (repeatable: all of them)').argParser(collect))
    .addOption(new Option('--health <status>', 'only instances with this health: passing, warning, critical (repeatable: any of them; no checks = passing)').argParser(collect))
    .addOption(new Option('--zone <zone>', 'only instances in this zone'));
}

export function filterFrom(f: FilterFlags): CacheFilter | undefined {
  const out: CacheFilter = {};
  if (f.tag?.length) out.tags = f.tag;
  if (f.meta?.length) out.metadata = keyValues(f.meta, 'meta');
  if (f.health?.length) {
    const list = f.health.flatMap((h) => h.split(','));
    for (const h of list) if (!isHealthStatus(h)) throw new InvalidArgumentError(`invalid --health ${JSON.stringify(h)}: expected passing, warning or critical`);
    out.health = list as HealthStatus[];
  }
  if (f.zone !== undefined) out.zone = f.zone;
  return Object.keys(out).length ? out : undefined;
}

/** The same rule as ServiceCache's filter, for listings made without a cache. */
export function matches(i: Instance, f: CacheFilter | undefined): boolean {
  if (!f) return true;
  if (f.tags && !f.tags.every((t) => i.tags.includes(t))) return false;
  if (f.metadata && !Object.entries(f.metadata).every(([k, v]) => i.metadata[k] === v)) return false;
  if (f.health && !(f.health as readonly HealthStatus[]).includes(i.health ?? 'passing')) return false;
  if (f.zone !== undefined && i.zone !== f.zone) return false;
  return true;
}

/** What a layout stores beside the instance: when it was registered, its session's TTL. */
export interface Facts {
  registeredAt?: number;
  sessionTtl?: number;
}

export function factsOf(kv: KeyValue): Facts {
  if (!kv.value.startsWith('{')) return {};
  try {
    const o = JSON.parse(kv.value) as Record<string, unknown>;
    const at = typeof o.registeredAt === 'number' ? o.registeredAt : typeof o.registrationTimeUTC === 'number' ? o.registrationTimeUTC : undefined;
    return { ...(at !== undefined ? { registeredAt: at } : {}), ...(typeof o.sessionTtl === 'number' ? { sessionTtl: o.sessionTtl } : {}) };
  } catch {
    return {};
  }
}

export interface Row {
  readonly instance: Instance;
  readonly kv: KeyValue;
}

export const LS_HEADER = ['ID', 'ADDRESS', 'HEALTH', 'STATUS', 'AGE', 'TTL'];
export const LS_WIDE_HEADER = [...LS_HEADER, 'ZONE', 'WEIGHT', 'TAGS', 'METADATA', 'SESSION'];

export function lsRow(r: Row, wide: boolean, now = Date.now()): string[] {
  const i = r.instance;
  const f = factsOf(r.kv);
  const row = [i.id, instanceEndpoint(i), i.health ?? '-', i.status, f.registeredAt ? age(now - f.registeredAt) : '-', f.sessionTtl ? formatDuration(f.sessionTtl) : r.kv.session ? '?' : '-'];
  if (wide) {
    const md = Object.entries(i.metadata).map(([k, v]) => `${k}=${v}`).join(',');
    row.push(i.zone ?? '-', String(i.weight), i.tags.length ? i.tags.join(',') : '-', md || '-', r.kv.session ?? '-');
  }
  return row;
}

/** An instance as JSON output: the instance, plus what the listing knows about its key. */
export function instanceJson(r: Row): Record<string, unknown> {
  const f = factsOf(r.kv);
  return { ...r.instance, ...f, ...(r.kv.session !== undefined ? { session: r.kv.session } : {}), modRevision: r.kv.modRevision };
}

/** `orders/127.0.0.1:9001  127.0.0.1:9001  health=passing  draining  zone=eu-1  weight=3  tags=a,b  k=v` */
export function describeInstance(i: Instance): string {
  const parts = [`${i.service}/${i.id}`, instanceEndpoint(i)];
  if (i.health) parts.push(`health=${i.health}`);
  if (i.status !== 'up') parts.push(i.status);
  if (i.zone) parts.push(`zone=${i.zone}`);
  if (i.weight !== 1) parts.push(`weight=${i.weight}`);
  if (i.tags.length) parts.push(`tags=${i.tags.join(',')}`);
  const md = Object.entries(i.metadata);
  if (md.length) parts.push(md.map(([k, v]) => `${k}=${v}`).join(','));
  return parts.join('  ');
}

/** What changed between two versions of an instance: `health passing→critical, weight 1→3`. */
export function describeChange(a: Instance, b: Instance): string {
  const out: string[] = [];
  const cmp = (name: string, x: unknown, y: unknown) => {
    const sx = typeof x === 'string' || x === undefined ? String(x ?? '-') : JSON.stringify(x);
    const sy = typeof y === 'string' || y === undefined ? String(y ?? '-') : JSON.stringify(y);
    if (sx !== sy) out.push(`${name} ${sx}→${sy}`);
  };
  cmp('address', instanceEndpoint(a), instanceEndpoint(b));
  cmp('health', a.health, b.health);
  cmp('status', a.status, b.status);
  cmp('weight', String(a.weight), String(b.weight));
  cmp('zone', a.zone, b.zone);
  cmp('tags', a.tags.join(','), b.tags.join(','));
  cmp('metadata', a.metadata, b.metadata);
  return out.join(', ');
}

/**
 * Why a key went away. `delete`: deregistered on purpose, by its owner (the value carries the
 * layout's leaving mark, Layout.markLeaving) or by an operator (`roster deregister` left an intent
 * naming the key's session), or a key without a session deleted by hand. `expire`: a session-bound
 * key removed without a deregistration: its session ended (the process died, or lost the registry
 * for longer than its TTL), or someone deleted it by hand. Layouts that cannot mark (plain,
 * etcd-endpoints, curator) always show `delete`.
 */
export async function deletionKind(backend: Backend, layout: Layout, service: string, prev: KeyValue, id: string | undefined): Promise<'delete' | 'expire'> {
  if (!layout.isLeaving || prev.session === undefined) return 'delete';
  if (layout.isLeaving(prev.value)) return 'delete';
  if (id === undefined) return 'expire';
  try {
    const intent = parseIntent(await backend.get(intentKey(service, id)));
    if (intent && (intent.session === undefined || intent.session === prev.session)) return 'delete';
  } catch {
    // cannot tell: the key's session ended as far as we know
  }
  return 'expire';
}
