import type { KeyValue } from '../contract/types.js';
import { InvalidArgumentError } from '../core/errors.js';
import { instanceEndpoint, toInstance, type Instance } from '../core/model.js';
import { LIMITS, parseHostPort, validateKey, validateMetadata } from '../core/names.js';

/**
 * A Layout says where and how instances are stored in the key space, so roster can read and write
 * what other ecosystems already register:
 *
 * - `roster` (default): `services/<service>/<id>` → the Instance as JSON.
 * - `plain`: `<root>/<service>/<host:port>` → empty, or JSON with optional metadata (the layout many
 *   Go services use). Key paths relative to the backend root; an etcd backend opened at
 *   `etcd://h:2379/` has root "/", so root "services" means etcd keys `/services/<svc>/<addr>`.
 * - `etcd-endpoints`: etcd's client/v3/naming/endpoints, read by grpc-go's `etcd:///` resolver:
 *   `<root>/<service>/<addr>` → `{"Op":0,"Addr":"host:port","Metadata":...}`.
 * - `curator`: Apache Curator x-discovery, `<root>/<service>/<id>` → ServiceInstance JSON.
 *
 * decode() returns undefined for entries that are not instances (ignored), and throws
 * InvalidArgumentError for entries that claim to be instances but are malformed; the cache reports
 * those as errors and keeps going.
 */
export interface Layout {
  readonly name: string;
  /** Prefix under which all services live (for listing services). Ends with '/'. */
  readonly root: string;
  /** Prefix of one service's instances. Ends with '/'. */
  servicePrefix(service: string): string;
  key(instance: Instance): string;
  encode(instance: Instance, extra?: { registeredAt?: number }): string;
  decode(service: string, kv: KeyValue): Instance | undefined;
}

function normRoot(root: string): string {
  const r = root.replace(/^\/+|\/+$/g, '');
  if (r !== '') validateKey(r, 'layout root');
  return r === '' ? '' : r + '/';
}

function leafOf(prefix: string, key: string): string | undefined {
  if (!key.startsWith(prefix)) return undefined;
  const leaf = key.slice(prefix.length);
  return leaf === '' || leaf.includes('/') ? undefined : leaf;
}

function parseJson(value: string, what: string): unknown {
  try {
    return JSON.parse(value);
  } catch (e) {
    throw new InvalidArgumentError(`malformed ${what}: not JSON`, { cause: e });
  }
}

export function rosterLayout(root = 'services'): Layout {
  const r = normRoot(root);
  return {
    name: 'roster',
    root: r,
    servicePrefix: (service) => `${r}${service}/`,
    key: (i) => `${r}${i.service}/${i.id}`,
    encode: (i, extra) => JSON.stringify({ ...i, ...(extra?.registeredAt ? { registeredAt: extra.registeredAt } : {}) }),
    decode(service, kv) {
      const leaf = leafOf(`${r}${service}/`, kv.key);
      if (leaf === undefined) return undefined;
      const o = parseJson(kv.value, `instance at ${kv.key}`) as Record<string, unknown>;
      return toInstance({ ...o, service, id: leaf });
    },
  };
}

export function plainLayout(root = 'services'): Layout {
  const r = normRoot(root);
  return {
    name: 'plain',
    root: r,
    servicePrefix: (service) => `${r}${service}/`,
    key: (i) => `${r}${i.service}/${instanceEndpoint(i)}`,
    encode: (i) => (Object.keys(i.metadata).length === 0 ? '' : JSON.stringify({ metadata: i.metadata })),
    decode(service, kv) {
      const leaf = leafOf(`${r}${service}/`, kv.key);
      if (leaf === undefined) return undefined;
      const { address, port } = parseHostPort(leaf);
      let metadata: Record<string, string> | undefined;
      if (kv.value.trim() !== '') {
        const o = parseJson(kv.value, `instance at ${kv.key}`);
        const m = o && typeof o === 'object' ? ((o as Record<string, unknown>).metadata ?? (o as Record<string, unknown>).Metadata) : undefined;
        if (m && typeof m === 'object') metadata = Object.fromEntries(Object.entries(m).map(([k, v]) => [k, String(v)]));
      }
      return toInstance({ service, id: leaf, address, ...(port ? { port } : {}), ...(metadata ? { metadata } : {}) });
    },
  };
}

export function etcdEndpointsLayout(root = 'services'): Layout {
  const r = normRoot(root);
  return {
    name: 'etcd-endpoints',
    root: r,
    servicePrefix: (service) => `${r}${service}/`,
    key: (i) => `${r}${i.service}/${instanceEndpoint(i)}`,
    encode: (i) => JSON.stringify({ Op: 0, Addr: instanceEndpoint(i), Metadata: Object.keys(i.metadata).length ? i.metadata : null }),
    decode(service, kv) {
      const leaf = leafOf(`${r}${service}/`, kv.key);
      if (leaf === undefined) return undefined;
      const o = parseJson(kv.value, `endpoint at ${kv.key}`) as { Op?: unknown; Addr?: unknown; Metadata?: unknown };
      if (o.Op !== undefined && o.Op !== 0) return undefined; // Op 1 = delete marker in an update stream
      if (typeof o.Addr !== 'string') throw new InvalidArgumentError(`malformed endpoint at ${kv.key}: "Addr" must be a "host:port" string`);
      const { address, port } = parseHostPort(o.Addr);
      const md = o.Metadata && typeof o.Metadata === 'object' ? Object.fromEntries(Object.entries(o.Metadata).map(([k, v]) => [k, typeof v === 'string' ? v : JSON.stringify(v)])) : {};
      return toInstance({ service, id: leaf, address, ...(port ? { port } : {}), metadata: md });
    },
  };
}

/**
 * Curator's ServiceInstance as its JsonInstanceSerializer (Jackson) writes it:
 * `{"name","id","address","port","sslPort","payload","registrationTimeUTC","serviceType","uriSpec","enabled"}`.
 * The payload carries its Java type in "@class" (@JsonTypeInfo(use = CLASS)); roster writes a
 * LinkedHashMap of the metadata (plus "zone"). Reading, a payload with an object "metadata" (the
 * ZookeeperInstance of Spring Cloud Zookeeper and Dubbo: {"@class", "id", "name", "metadata"}) gives
 * that map; any other object payload is read as a flat map. Entries roster's metadata rules reject
 * are skipped rather than hiding the instance. "enabled" (CURATOR-275; absent = true): false ↔
 * status "draining". `port` falls back to `sslPort`.
 */
export function curatorLayout(root = 'services'): Layout {
  const r = normRoot(root);
  return {
    name: 'curator',
    root: r,
    servicePrefix: (service) => `${r}${service}/`,
    key: (i) => `${r}${i.service}/${i.id}`,
    encode: (i, extra) =>
      JSON.stringify({
        name: i.service,
        id: i.id,
        address: i.address,
        port: i.port ?? null,
        sslPort: null,
        payload: { '@class': 'java.util.LinkedHashMap', ...i.metadata, ...(i.zone ? { zone: i.zone } : {}) },
        registrationTimeUTC: extra?.registeredAt ?? Date.now(),
        serviceType: 'DYNAMIC',
        uriSpec: null,
        enabled: i.status !== 'draining',
      }),
    decode(service, kv) {
      const leaf = leafOf(`${r}${service}/`, kv.key);
      if (leaf === undefined) return undefined;
      const o = parseJson(kv.value, `Curator ServiceInstance at ${kv.key}`);
      if (!o || typeof o !== 'object' || Array.isArray(o)) {
        throw new InvalidArgumentError(`malformed Curator ServiceInstance at ${kv.key}: expected a JSON object`);
      }
      const inst = o as Record<string, unknown>;
      const isMap = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);
      const payload = isMap(inst.payload) ? inst.payload : {};
      const nested = isMap(payload.metadata) ? payload.metadata : undefined;
      const source = nested ?? payload;
      const metadata: Record<string, string> = {};
      let n = 0;
      for (const [k, v] of Object.entries(source)) {
        if (n >= LIMITS.metadataEntries) break;
        if (k === '@class' || v === null || v === undefined || (!nested && k === 'zone')) continue;
        const value = typeof v === 'string' ? v : JSON.stringify(v);
        try {
          validateMetadata({ [k]: value });
        } catch {
          continue; // a key or value roster cannot carry: skip it, keep the instance
        }
        metadata[k] = value;
        n++;
      }
      const port = typeof inst.port === 'number' ? inst.port : typeof inst.sslPort === 'number' ? inst.sslPort : undefined;
      const zone = typeof payload.zone === 'string' ? payload.zone : nested && typeof nested.zone === 'string' ? nested.zone : undefined;
      return toInstance({
        service,
        id: typeof inst.id === 'string' && inst.id !== '' ? inst.id : leaf,
        address: inst.address,
        ...(port ? { port } : {}),
        metadata,
        ...(zone ? { zone } : {}),
        status: inst.enabled === false ? 'draining' : 'up',
      });
    },
  };
}

/** Resolve a layout by name (CLI / URL option). */
export function layoutByName(name: string, root?: string): Layout {
  switch (name) {
    case 'roster': return rosterLayout(root);
    case 'plain': return plainLayout(root);
    case 'etcd-endpoints': return etcdEndpointsLayout(root);
    case 'curator': return curatorLayout(root);
    default:
      throw new InvalidArgumentError(`unknown layout ${JSON.stringify(name)}: expected roster, plain, etcd-endpoints or curator`);
  }
}
