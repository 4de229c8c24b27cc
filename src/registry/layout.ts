import type { Backend, KeyValue } from '../contract/types.js';
import { InvalidArgumentError } from '../core/errors.js';
import { instanceEndpoint, toInstance, type Instance } from '../core/model.js';
import { LIMITS, parseHostPort, validateKey, validateMetadata, validateServiceName, validateTags } from '../core/names.js';

/**
 * A Layout says where and how instances are stored in the key space, so roster can read and write
 * what other ecosystems already register:
 *
 * - `roster` (default): `services/<service>/<id>` → the Instance as JSON.
 * - `plain`: `<root>/<service>/<host:port>` → any value (the layout many Go services use). Key
 *   paths relative to the backend root; an etcd backend opened at `etcd://h:2379/` has root "/",
 *   so root "services" means etcd keys `/services/<svc>/<addr>`.
 * - `etcd-endpoints`: etcd's client/v3/naming/endpoints, read by grpc-go's `etcd:///` resolver:
 *   `<root>/<service>/<addr>` → `{"Op":0,"Addr":"host:port","Metadata":...}`.
 * - `curator`: Apache Curator x-discovery, `<root>/<service>/<id>` → ServiceInstance JSON.
 *
 * decode() returns undefined for entries that are not instances (ignored), and throws
 * InvalidArgumentError for entries that claim to be instances but are malformed; the cache reports
 * those as errors and keeps going.
 *
 * **Values written by others (plain and etcd-endpoints)** are read by one rule, `readAttributes`:
 * the key names the endpoint; the value only adds to it. Empty, plain text (Go services often store
 * the address itself), a JSON scalar or array: no metadata. A JSON object:
 * - `weight`, `zone`, `tags` (any letter case: Go's `Weight` too) set those fields when valid
 *   (weight an integer 0-10000, or such a number as a string; zone a service-name-like string;
 *   tags an array of strings, invalid ones left out) and are otherwise ignored;
 * - `metadata` (any letter case), when it is an object or a string holding a JSON object, gives
 *   the metadata ("nested"); otherwise every other top-level entry is metadata ("flat");
 * - metadata values that are not strings are kept as their JSON text; null is left out; an entry
 *   roster's metadata rules reject (key characters, length, more than 64) is left out rather than
 *   hiding the instance.
 * What roster writes is the nested form, `{"metadata":{...},"weight":n,"zone":z,"tags":[...]}`
 * with only the non-default fields, so it reads back exactly.
 */
export interface Layout {
  readonly name: string;
  /** Prefix under which all services live (for listing services). Ends with '/'. */
  readonly root: string;
  /** Prefix of one service's instances. Ends with '/'. */
  servicePrefix(service: string): string;
  key(instance: Instance): string;
  /** `extra`: when the registration was made and the TTL of the session it is bound to (a layout
   *  may store them for operators: `roster ls` shows AGE and TTL). */
  encode(instance: Instance, extra?: { registeredAt?: number; sessionTtl?: number }): string;
  decode(service: string, kv: KeyValue): Instance | undefined;
  /**
   * Optional: the stored value marked "being deregistered at `at`" (undefined when it cannot be
   * marked). A writer that deregisters on purpose (Registrar, `roster deregister`) writes the marked
   * value and then deletes the key, so a watcher tells a deregistration (the deleted value carries
   * the mark) from an expiry (it does not: the session ended). The mark must not change what
   * `decode` returns.
   */
  markLeaving?(value: string, at: number): string | undefined;
  /** Optional: whether a stored value carries that mark. */
  isLeaving?(value: string): boolean;
  /**
   * Optional. Writers (Registrar) call it before encoding an instance of `service`, so a layout
   * can write in the shape the service's other instances already use (the curator layout learns
   * the payload class of the Java side this way). Failures are the caller's to report.
   */
  prepare?(backend: Backend, service: string, opts?: { signal?: AbortSignal }): Promise<void>;
  /**
   * Optional. A layout whose instances live in the engine's own service catalog rather than under
   * keys (Consul's agent and health API: consulCatalogLayout) returns the store that holds them: a
   * Backend over that catalog, keys `servicePrefix(service) + id`, whose sessions are the
   * registrations' liveness. The Registrar and ServiceCache then read and write through it instead
   * of `backend`, with everything else unchanged (sessions, repair, lost / restored, the watched view).
   */
  store?(backend: Backend): Backend;
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

/** JSON.parse, or undefined when `value` is not JSON. */
function tryJson(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    return undefined;
  }
}

const isMap = (v: unknown): v is Record<string, unknown> => !!v && typeof v === 'object' && !Array.isArray(v);

/** Instance fields a value may carry besides the endpoint its key names. */
interface Attributes {
  metadata: Record<string, string>;
  weight?: number;
  zone?: string;
  tags?: string[];
}

/** Copy `source`'s entries into metadata by roster's rules, leaving out what they reject and `skip`. */
export function metadataFrom(source: Record<string, unknown>, skip: (k: string) => boolean): Record<string, string> {
  const metadata: Record<string, string> = {};
  let n = 0;
  for (const [k, v] of Object.entries(source)) {
    if (n >= LIMITS.metadataEntries) break;
    if (v === null || v === undefined || skip(k)) continue;
    const value = typeof v === 'string' ? v : JSON.stringify(v);
    try {
      validateMetadata({ [k]: value });
    } catch {
      continue; // a key or value roster cannot carry: leave it out, keep the instance
    }
    metadata[k] = value;
    n++;
  }
  return metadata;
}

export function weightOf(v: unknown): number | undefined {
  const n = typeof v === 'number' ? v : typeof v === 'string' && /^\d{1,5}$/.test(v) ? Number(v) : NaN;
  return Number.isInteger(n) && n >= 0 && n <= 10000 ? n : undefined;
}

export function zoneOf(v: unknown): string | undefined {
  try {
    return typeof v === 'string' && v !== '' ? validateServiceName(v, 'zone') : undefined;
  } catch {
    return undefined;
  }
}

export function tagsOf(v: unknown): string[] | undefined {
  if (!Array.isArray(v)) return undefined;
  const ok = v.filter((t) => {
    try {
      validateTags([t]);
      return true;
    } catch {
      return false;
    }
  }) as string[];
  return ok.slice(0, LIMITS.tags);
}

const RESERVED = new Set(['weight', 'zone', 'tags', 'metadata']);

/** The documented rule (see Layout) for a value some other program wrote. */
function readAttributes(o: unknown): Attributes {
  if (!isMap(o)) return { metadata: {} };
  const field = (name: string): unknown => {
    if (name in o) return o[name];
    for (const k of Object.keys(o)) if (k.toLowerCase() === name) return o[k];
    return undefined;
  };
  let nested = field('metadata');
  if (typeof nested === 'string') nested = tryJson(nested);
  const metadata = isMap(nested) ? metadataFrom(nested, () => false) : metadataFrom(o, (k) => RESERVED.has(k.toLowerCase()));
  const weight = weightOf(field('weight'));
  const zone = zoneOf(field('zone'));
  const tags = tagsOf(field('tags'));
  return { metadata, ...(weight !== undefined ? { weight } : {}), ...(zone ? { zone } : {}), ...(tags?.length ? { tags } : {}) };
}

/** What roster writes for an instance's attributes: '' when all are default. */
function writeAttributes(i: Instance): string {
  const hasMeta = Object.keys(i.metadata).length > 0;
  if (!hasMeta && i.weight === 1 && !i.zone && i.tags.length === 0) return '';
  return JSON.stringify({
    ...(hasMeta ? { metadata: i.metadata } : {}),
    ...(i.weight !== 1 ? { weight: i.weight } : {}),
    ...(i.zone ? { zone: i.zone } : {}),
    ...(i.tags.length ? { tags: i.tags } : {}),
  });
}

/**
 * roster's own layout: `<root><service>/<id>` → the Instance as JSON, plus what the writer adds for
 * operators: `registeredAt` (ms since epoch), `sessionTtl` (ms), and `deregisteredAt` on the value
 * written just before a deliberate deregistration deletes the key (Layout.markLeaving).
 */
export function rosterLayout(root = 'services'): Layout {
  const r = normRoot(root);
  return {
    name: 'roster',
    root: r,
    servicePrefix: (service) => `${r}${service}/`,
    key: (i) => `${r}${i.service}/${i.id}`,
    encode: (i, extra) =>
      JSON.stringify({
        ...i,
        ...(extra?.registeredAt ? { registeredAt: extra.registeredAt } : {}),
        ...(extra?.sessionTtl ? { sessionTtl: extra.sessionTtl } : {}),
      }),
    markLeaving(value, at) {
      const o = tryJson(value);
      return isMap(o) ? JSON.stringify({ ...o, deregisteredAt: at }) : undefined;
    },
    isLeaving(value) {
      if (!value.includes('"deregisteredAt"')) return false;
      const o = tryJson(value);
      return isMap(o) && typeof o.deregisteredAt === 'number';
    },
    decode(service, kv) {
      const leaf = leafOf(`${r}${service}/`, kv.key);
      if (leaf === undefined) return undefined;
      const o = parseJson(kv.value, `instance at ${kv.key}`) as Record<string, unknown>;
      return toInstance({ ...o, service, id: leaf });
    },
  };
}

export interface PlainLayoutOptions {
  /**
   * What the value holds. `attributes` (default): '' when the instance has nothing but its
   * endpoint, else the nested JSON form (see Layout). `address`: the endpoint as plain text, as
   * Go services that read `string(kv.Value)` as the address expect; such a value cannot carry
   * metadata, weight, zone or tags, so encoding an instance with any of them throws.
   */
  value?: 'attributes' | 'address';
}

export function plainLayout(root = 'services', opts: PlainLayoutOptions = {}): Layout {
  const r = normRoot(root);
  const mode = opts.value ?? 'attributes';
  if (mode !== 'attributes' && mode !== 'address') {
    throw new InvalidArgumentError(`invalid plain layout value ${JSON.stringify(mode)}: expected "attributes" or "address"`);
  }
  return {
    name: 'plain',
    root: r,
    servicePrefix: (service) => `${r}${service}/`,
    key: (i) => `${r}${i.service}/${instanceEndpoint(i)}`,
    encode(i) {
      const attrs = writeAttributes(i);
      if (mode === 'attributes') return attrs;
      if (attrs !== '') {
        throw new InvalidArgumentError(
          `instance ${i.service}/${i.id} has metadata, weight, zone or tags, which the plain layout with value "address" cannot store: drop them or use value "attributes"`,
        );
      }
      return instanceEndpoint(i);
    },
    decode(service, kv) {
      const leaf = leafOf(`${r}${service}/`, kv.key);
      if (leaf === undefined) return undefined;
      const { address, port } = parseHostPort(leaf);
      const v = kv.value.trim();
      const attrs = readAttributes(v.startsWith('{') ? tryJson(v) : undefined);
      return toInstance({ service, id: leaf, address, ...(port ? { port } : {}), ...attrs });
    },
  };
}

/**
 * etcd's naming/endpoints format. grpc-go's etcd resolver copies `Metadata` into
 * `resolver.Address.Metadata`, and grpc-go compares and hashes Addresses (its base balancer keys
 * a map by them), so a JSON object there (a Go map) makes round_robin panic with "hash of
 * unhashable type map[string]interface {}" (etcd-io/etcd#19700, grpc/grpc-go#8225). roster
 * therefore writes `Metadata` as a string (the nested attributes JSON, see Layout), or null when
 * there is nothing to carry. It reads every form: null; a string holding a JSON object (roster's);
 * an object (older roster, other writers); any other string or scalar is kept as metadata
 * `metadata`.
 */
export function etcdEndpointsLayout(root = 'services'): Layout {
  const r = normRoot(root);
  return {
    name: 'etcd-endpoints',
    root: r,
    servicePrefix: (service) => `${r}${service}/`,
    key: (i) => `${r}${i.service}/${instanceEndpoint(i)}`,
    encode: (i) => JSON.stringify({ Op: 0, Addr: instanceEndpoint(i), Metadata: writeAttributes(i) || null }),
    decode(service, kv) {
      const leaf = leafOf(`${r}${service}/`, kv.key);
      if (leaf === undefined) return undefined;
      const o = parseJson(kv.value, `endpoint at ${kv.key}`) as { Op?: unknown; Addr?: unknown; Metadata?: unknown };
      if (!isMap(o)) throw new InvalidArgumentError(`malformed endpoint at ${kv.key}: expected a JSON object with "Addr"`);
      if (o.Op !== undefined && o.Op !== 0) return undefined; // Op 1 = delete marker in an update stream
      if (typeof o.Addr !== 'string') throw new InvalidArgumentError(`malformed endpoint at ${kv.key}: "Addr" must be a "host:port" string`);
      const { address, port } = parseHostPort(o.Addr);
      const md = o.Metadata;
      const parsed = typeof md === 'string' ? tryJson(md) : md;
      const attrs: Attributes = isMap(parsed)
        ? readAttributes(parsed)
        : md === null || md === undefined
          ? { metadata: {} }
          : { metadata: metadataFrom({ metadata: md }, () => false) };
      return toInstance({ service, id: leaf, address, ...(port ? { port } : {}), ...attrs });
    },
  };
}

/** Generic map classes (written as a flat map). A custom class seen beside one of them wins: a map
 *  payload is also what roster itself writes when it knows no better. */
const MAP_CLASSES = new Set(['java.util.LinkedHashMap', 'java.util.HashMap', 'java.util.TreeMap', 'java.util.concurrent.ConcurrentHashMap']);
const DEFAULT_PAYLOAD_CLASS = 'java.util.LinkedHashMap';

type JsonKind = 'string' | 'number' | 'boolean' | 'object' | 'array' | 'null';
const kindOf = (v: unknown): JsonKind => (v === null ? 'null' : Array.isArray(v) ? 'array' : (typeof v as JsonKind));

/** The payload shape a service's Java instances use, learned from one of them. */
interface PayloadShape {
  readonly cls: string;
  /** ZookeeperInstance-like: {"@class", "id", "name", "metadata": {...}}. */
  readonly nested: boolean;
  /** Top-level field kinds (flat shape). */
  readonly fields: ReadonlyMap<string, JsonKind>;
}

function shapeOf(payload: Record<string, unknown>): PayloadShape | undefined {
  const cls = payload['@class'];
  if (typeof cls !== 'string' || cls === '') return undefined;
  const fields = new Map<string, JsonKind>();
  for (const [k, v] of Object.entries(payload)) if (k !== '@class') fields.set(k, kindOf(v));
  return { cls, nested: isMap(payload.metadata), fields };
}

/** A metadata string as the JSON kind the Java field has, or undefined when it cannot be one. */
function asKind(value: string, kind: JsonKind | undefined): unknown {
  switch (kind) {
    case 'number':
      return /^-?\d+(\.\d+)?([eE][+-]?\d+)?$/.test(value) && Number.isFinite(Number(value)) ? Number(value) : undefined;
    case 'boolean':
      return value === 'true' ? true : value === 'false' ? false : undefined;
    case 'object':
    case 'array': {
      const v = tryJson(value);
      return kindOf(v) === kind ? v : undefined;
    }
    default:
      return value; // string, null (unknown) or absent: a string, which Jackson coerces to scalars
  }
}

export interface CuratorLayoutOptions {
  /**
   * Java class of the payload roster writes (Jackson's "@class"). Curator's JsonInstanceSerializer
   * casts every payload it reads to the payload class its ServiceDiscovery was built with, and one
   * failed cast fails `queryForInstances` for the whole service: so roster must write the class
   * the Java side uses. Default: the class the service's other instances use (learned from what
   * this layout decodes, and by `prepare` before a Registrar writes), else java.util.LinkedHashMap.
   * Set it when roster may register before any Java instance exists.
   */
  payloadClass?: string;
}

/**
 * Curator's ServiceInstance as its JsonInstanceSerializer (Jackson) writes it:
 * `{"name","id","address","port","sslPort","payload","registrationTimeUTC","serviceType","uriSpec","enabled"}`.
 *
 * Payload, written: `{"@class": <class>, ...}` in the shape of the service's existing payloads
 * (see CuratorLayoutOptions.payloadClass for the class):
 * - no known shape, or a generic map class: a flat map of the metadata plus "zone";
 * - a ZookeeperInstance-like shape (an object "metadata" field: Spring Cloud Zookeeper, Dubbo):
 *   `{"@class", "id": <instance id>, "name": <service>, "metadata": {...metadata, zone}}`, with
 *   "id" / "name" only where the learned shape has them;
 * - any other class (a POJO): the metadata entries as top-level fields, each converted to the JSON
 *   kind the learned payload gives that field (number, boolean, object, array); an entry that
 *   cannot take that kind is left out, so a Java reader never fails on roster's instance. Entries
 *   the class does not have are written as strings (Curator ignores unknown properties).
 *
 * Payload, read: an object "metadata" (nested shape) gives that map; any other object payload is
 * read as a flat map; "@class" is dropped, non-string values are kept as their JSON text; entries
 * roster's metadata rules reject are skipped rather than hiding the instance; "zone" becomes the
 * zone. "enabled" (CURATOR-275; absent = true): false ↔ status "draining". `port` falls back to
 * `sslPort`.
 */
export function curatorLayout(root = 'services', opts: CuratorLayoutOptions = {}): Layout {
  const r = normRoot(root);
  if (opts.payloadClass !== undefined && (typeof opts.payloadClass !== 'string' || !/^[A-Za-z_$][\w$]*(\.[A-Za-z_$][\w$]*)*$/.test(opts.payloadClass))) {
    throw new InvalidArgumentError(`invalid Curator payload class ${JSON.stringify(opts.payloadClass)}: expected a Java class name such as com.example.InstanceDetails`);
  }
  /** Per service: the payload shape of a non-map class seen there (the Java side's), else of a map. */
  const shapes = new Map<string, PayloadShape>();
  const learn = (service: string, payload: Record<string, unknown>) => {
    const s = shapeOf(payload);
    if (!s) return;
    const known = shapes.get(service);
    // A custom class wins over a generic map (which is also what roster writes by default).
    if (!known || !MAP_CLASSES.has(s.cls) || MAP_CLASSES.has(known.cls)) shapes.set(service, s);
  };
  const payloadFor = (i: Instance): Record<string, unknown> => {
    const learned = shapes.get(i.service);
    const cls = opts.payloadClass ?? learned?.cls ?? DEFAULT_PAYLOAD_CLASS;
    const values: Record<string, string> = { ...i.metadata, ...(i.zone ? { zone: i.zone } : {}) };
    const shape = learned?.cls === cls ? learned : undefined;
    if (!shape || MAP_CLASSES.has(cls)) return { '@class': cls, ...values };
    if (shape.nested) {
      return {
        '@class': cls,
        ...(shape.fields.has('id') ? { id: i.id } : {}),
        ...(shape.fields.has('name') ? { name: i.service } : {}),
        metadata: values,
      };
    }
    const payload: Record<string, unknown> = { '@class': cls };
    for (const [k, v] of Object.entries(values)) {
      const typed = asKind(v, shape.fields.get(k));
      if (typed !== undefined) payload[k] = typed;
    }
    return payload;
  };
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
        payload: payloadFor(i),
        registrationTimeUTC: extra?.registeredAt ?? Date.now(),
        serviceType: 'DYNAMIC',
        uriSpec: null,
        enabled: i.status !== 'draining',
      }),
    decode(service, kv) {
      const leaf = leafOf(`${r}${service}/`, kv.key);
      if (leaf === undefined) return undefined;
      const o = parseJson(kv.value, `Curator ServiceInstance at ${kv.key}`);
      if (!isMap(o)) throw new InvalidArgumentError(`malformed Curator ServiceInstance at ${kv.key}: expected a JSON object`);
      const payload = isMap(o.payload) ? o.payload : {};
      learn(service, payload);
      const nested = isMap(payload.metadata) ? payload.metadata : undefined;
      const metadata = metadataFrom(nested ?? payload, (k) => k === '@class' || k === 'zone');
      const port = typeof o.port === 'number' ? o.port : typeof o.sslPort === 'number' ? o.sslPort : undefined;
      const zone = zoneOf(nested ? nested.zone : payload.zone);
      return toInstance({
        service,
        id: typeof o.id === 'string' && o.id !== '' ? o.id : leaf,
        address: o.address,
        ...(port ? { port } : {}),
        metadata,
        ...(zone ? { zone } : {}),
        status: o.enabled === false ? 'draining' : 'up',
      });
    },
    async prepare(backend, service, o = {}) {
      const { items } = await backend.list(`${r}${service}/`, o.signal ? { signal: o.signal } : {});
      for (const kv of items) {
        if (leafOf(`${r}${service}/`, kv.key) === undefined) continue;
        const v = tryJson(kv.value);
        if (isMap(v) && isMap(v.payload)) learn(service, v.payload);
      }
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
