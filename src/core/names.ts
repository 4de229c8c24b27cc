import { InvalidArgumentError } from './errors.js';

/**
 * Naming rules, enforced at every edge (public API, HTTP, CLI). They are deliberately ASCII-only:
 * look-alike Unicode ("orders" with a Cyrillic "о"), zero-width characters and bidi overrides are
 * rejected rather than normalised, so two names that look equal are equal. Every rule is also valid
 * in etcd keys, ZooKeeper znode names and Consul service names, so the same name works everywhere.
 *
 * - service / zone: 1–63 chars, `[A-Za-z0-9._-]`, starting and ending with a letter or digit.
 * - instance id: 1–128 chars, `[A-Za-z0-9._:@-]` (so `host:port` is a valid id), not `.` or `..`.
 * - key: 1–1024 chars of printable ASCII without space; `/`-separated segments, none empty,
 *   none `.` or `..`, no leading or trailing `/`. A *prefix* may end in `/` or be empty.
 * - value: a string of at most 1 MiB (UTF-8 bytes).
 * - metadata: at most 64 entries; key 1–128 chars `[A-Za-z0-9._/-]`; value at most 1024 chars
 *   without control characters.
 * - tag: 1–128 chars `[A-Za-z0-9._:/=-]`; at most 64 tags.
 */
export const LIMITS = {
  serviceName: 63,
  instanceId: 128,
  key: 1024,
  valueBytes: 1024 * 1024,
  metadataEntries: 64,
  metadataKey: 128,
  metadataValue: 1024,
  tag: 128,
  tags: 64,
  address: 253,
} as const;

const SERVICE_RE = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const ID_RE = /^[A-Za-z0-9._:@-]{1,128}$/;
const KEY_CHAR_RE = /^[\x21-\x7e]*$/;
const META_KEY_RE = /^[A-Za-z0-9._/-]{1,128}$/;
const TAG_RE = /^[A-Za-z0-9._:/=-]{1,128}$/;
// eslint-disable-next-line no-control-regex
const CONTROL_RE = /[\u0000-\u001f\u007f-\u009f\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/;

/** Quote untrusted input for an error message: non-ASCII and invisible characters are escaped
 *  (\uXXXX) so a bidi override or zero-width space in a name is visible, not applied, in logs. */
function describe(v: unknown): string {
  if (typeof v === 'string') {
    const short = v.length > 80 ? v.slice(0, 80) + '...' : v;
    return JSON.stringify(short).replace(/[^\x20-\x7e]/g, (c) => '\\u' + c.charCodeAt(0).toString(16).padStart(4, '0'));
  }
  return v === null ? 'null' : typeof v;
}

export function validateServiceName(name: unknown, what = 'service name'): string {
  if (typeof name !== 'string' || !SERVICE_RE.test(name)) {
    throw new InvalidArgumentError(
      `invalid ${what} ${describe(name)}: use 1-63 ASCII letters, digits, '.', '_' or '-', starting and ending with a letter or digit`,
      { details: { field: what } },
    );
  }
  return name;
}

export function validateInstanceId(id: unknown): string {
  if (typeof id !== 'string' || !ID_RE.test(id) || id === '.' || id === '..') {
    throw new InvalidArgumentError(
      `invalid instance id ${describe(id)}: use 1-128 ASCII letters, digits, '.', '_', ':', '@' or '-'`,
      { details: { field: 'id' } },
    );
  }
  return id;
}

function checkSegments(s: string, what: string): void {
  for (const seg of s.split('/')) {
    if (seg === '' || seg === '.' || seg === '..') {
      throw new InvalidArgumentError(
        `invalid ${what} ${describe(s)}: '/'-separated segments must be non-empty and not '.' or '..'`,
        { details: { field: what } },
      );
    }
  }
}

export function validateKey(key: unknown, what = 'key'): string {
  if (typeof key !== 'string' || key.length === 0 || key.length > LIMITS.key || !KEY_CHAR_RE.test(key)) {
    throw new InvalidArgumentError(
      `invalid ${what} ${describe(key)}: use 1-${LIMITS.key} printable ASCII characters without spaces`,
      { details: { field: what } },
    );
  }
  checkSegments(key, what);
  return key;
}

/** A prefix is '' (everything) or a key optionally followed by '/'. */
export function validatePrefix(prefix: unknown): string {
  if (prefix === '') return '';
  if (typeof prefix !== 'string') throw new InvalidArgumentError(`invalid prefix ${describe(prefix)}: expected a string`);
  validateKey(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix, 'prefix');
  return prefix;
}

export function validateValue(value: unknown, field = 'value'): string {
  if (typeof value !== 'string') {
    throw new InvalidArgumentError(`invalid ${field}: expected a string, got ${describe(value)}`, { details: { field } });
  }
  if (value.length > LIMITS.valueBytes || Buffer.byteLength(value) > LIMITS.valueBytes) {
    throw new InvalidArgumentError(`${field} too large: at most ${LIMITS.valueBytes} bytes`, { details: { field } });
  }
  return value;
}

export function validateMetadata(meta: unknown): Record<string, string> {
  if (meta === undefined || meta === null) return {};
  if (typeof meta !== 'object' || Array.isArray(meta)) {
    throw new InvalidArgumentError(`invalid metadata: expected an object of string values, got ${describe(meta)}`);
  }
  const out: Record<string, string> = {};
  const entries = Object.entries(meta as Record<string, unknown>);
  if (entries.length > LIMITS.metadataEntries) {
    throw new InvalidArgumentError(`too many metadata entries (${entries.length}): at most ${LIMITS.metadataEntries}`);
  }
  for (const [k, v] of entries) {
    if (!META_KEY_RE.test(k)) {
      throw new InvalidArgumentError(`invalid metadata key ${describe(k)}: use 1-128 ASCII letters, digits, '.', '_', '/' or '-'`);
    }
    if (typeof v !== 'string' || v.length > LIMITS.metadataValue || CONTROL_RE.test(v)) {
      throw new InvalidArgumentError(
        `invalid metadata value for ${describe(k)}: expected a string of at most ${LIMITS.metadataValue} characters without control or invisible characters`,
      );
    }
    out[k] = v;
  }
  return out;
}

export function validateTags(tags: unknown): string[] {
  if (tags === undefined || tags === null) return [];
  if (!Array.isArray(tags)) throw new InvalidArgumentError(`invalid tags: expected an array of strings, got ${describe(tags)}`);
  if (tags.length > LIMITS.tags) throw new InvalidArgumentError(`too many tags (${tags.length}): at most ${LIMITS.tags}`);
  for (const t of tags) {
    if (typeof t !== 'string' || !TAG_RE.test(t)) {
      throw new InvalidArgumentError(`invalid tag ${describe(t)}: use 1-128 ASCII letters, digits, '.', '_', ':', '/', '=' or '-'`);
    }
  }
  return [...new Set(tags as string[])];
}

const HOST_LABEL = /^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$/;
const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;
const IPV6 = /^[0-9A-Fa-f:.]{2,45}$/;

/** A host name (RFC 1123), an IPv4 address or an IPv6 address (without brackets). */
export function validateAddress(address: unknown): string {
  const bad = () =>
    new InvalidArgumentError(
      `invalid address ${describe(address)}: expected a host name, an IPv4 address or an IPv6 address (no scheme, no port)`,
      { details: { field: 'address' } },
    );
  if (typeof address !== 'string' || address.length === 0 || address.length > LIMITS.address) throw bad();
  if (IPV4.test(address)) return address;
  if (address.includes(':')) {
    if (IPV6.test(address) && address.split('::').length <= 2) return address;
    throw bad();
  }
  if (/^[\d.]+$/.test(address)) throw bad(); // looks numeric but is not a valid IPv4
  const host = address.endsWith('.') ? address.slice(0, -1) : address;
  if (!host.split('.').every((l) => HOST_LABEL.test(l))) throw bad();
  return address;
}

export function validatePort(port: unknown, what = 'port'): number {
  if (typeof port !== 'number' || !Number.isInteger(port) || port < 1 || port > 65535) {
    throw new InvalidArgumentError(`invalid ${what} ${describe(port)}: expected an integer from 1 to 65535`);
  }
  return port;
}

/** Parse "host:port", "[v6]:port" or "host" (port optional). */
export function parseHostPort(s: string): { address: string; port?: number } {
  let host = s;
  let portStr: string | undefined;
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (v6) {
    host = v6[1]!;
    portStr = v6[2];
  } else {
    const i = s.lastIndexOf(':');
    if (i > 0 && s.indexOf(':') === i) {
      host = s.slice(0, i);
      portStr = s.slice(i + 1);
    }
  }
  validateAddress(host);
  if (portStr === undefined) return { address: host };
  if (!/^\d{1,5}$/.test(portStr)) throw new InvalidArgumentError(`invalid port ${JSON.stringify(portStr)} in ${JSON.stringify(s)}: expected 1-65535`);
  return { address: host, port: validatePort(Number(portStr)) };
}

/**
 * Go-style absolute names. Go programs, etcdctl and zkCli spell keys from the root of the store
 * (`/services/web/10.0.0.1:8080`, `concurrency.NewMutex(s, "/locks/job")`, `/locks/job` in
 * Curator); roster keys are relative to the backend's root (the etcd URL prefix, the ZooKeeper
 * chroot). `resolveName` turns a name as such a program spells it into a roster key or prefix:
 *
 * - a name without a leading '/' is relative: returned unchanged (validated);
 * - a name with a leading '/' is absolute: `root` (see `nameRoot`) is stripped from it, so
 *   `/locks/job` under root `/` is `locks/job`, and `/app/locks/job` under `/app/` is `locks/job`;
 * - an absolute name outside `root` is refused, never rewritten: an etcd URL prefix is often a
 *   permission boundary, and a silent rewrite is how `/services/...` ends up looked for under
 *   `services/...`. Root '' (etcd://host:2379 without a path, where etcd keys are used exactly as
 *   given, so none starts with '/') refuses every absolute name, saying to add the '/'.
 *
 * A trailing '/' is kept (a prefix stays a prefix). `what` names the input in errors.
 */
export function resolveName(name: unknown, root: string, what = 'name'): string {
  if (typeof name !== 'string' || name === '') throw new InvalidArgumentError(`invalid ${what} ${describe(name)}: expected a non-empty key or prefix`, { details: { field: what } });
  if (!name.startsWith('/')) return validatePrefix(name);
  if (root === '') {
    throw new InvalidArgumentError(
      `absolute ${what} ${describe(name)} cannot be used here: this backend's keys have no leading '/' (an etcd URL without a path); ` +
        `open it with a trailing '/' (etcd://host:2379/) to use names as Go programs spell them, or drop the leading '/'`,
      { details: { field: what } },
    );
  }
  const r = root.endsWith('/') ? root : `${root}/`;
  if (!name.startsWith(r) || name.length === r.length) {
    throw new InvalidArgumentError(`absolute ${what} ${describe(name)} is outside this backend's root ${describe(r)}: use a name under it, or open the backend at a root that contains it`, {
      details: { field: what },
    });
  }
  return validatePrefix(name.slice(r.length));
}

/**
 * The root absolute names are resolved against (see `resolveName`): for etcd, the URL's prefix
 * as etcd spells it (`etcd://h:2379/` → '/', `etcd://h:2379/app` → '/app/', `etcd://h:2379` → '');
 * for every other backend '/' (ZooKeeper paths inside the chroot; the roster server, memory and
 * Consul have no leading '/' of their own).
 */
export function nameRoot(backend: { readonly kind: string; readonly url: string }): string {
  if (backend.kind !== 'etcd') return '/';
  const m = /^etcds?:\/\/[^/]*(\/.*)?$/i.exec(backend.url);
  const path = m?.[1] ?? '';
  return path === '' ? '' : path.endsWith('/') ? path : `${path}/`;
}
