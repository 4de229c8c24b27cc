import { InvalidArgumentError } from '../../core/errors.js';
import { parseHostPort, validateKey } from '../../core/names.js';

/**
 * `etcd://[user:password@]host[:port][,host2[:port]...][/prefix]`, `etcds://` for TLS.
 *
 * The path is a key prefix, applied verbatim: contract key `k` ↔ etcd key `<prefix>k`.
 *   etcd://h:2379/roster   → prefix "/roster/"  (a trailing '/' is added to a non-root path)
 *   etcd://h:2379/roster/  → prefix "/roster/"
 *   etcd://h:2379/         → prefix "/"          (contract key "services/a/x" ↔ etcd "/services/a/x")
 *   etcd://h:2379          → prefix ""           (contract keys are etcd keys)
 * The port defaults to 2379. Credentials in the URL are accepted but never echoed in `url`.
 */
export interface EtcdUrl {
  readonly tls: boolean;
  /** `host:port` (IPv6 bracketed), in URL order. */
  readonly hosts: readonly string[];
  readonly prefix: string;
  readonly username?: string;
  readonly password?: string;
  /** Canonical URL without credentials. */
  readonly url: string;
}

export function parseEtcdUrl(url: string): EtcdUrl {
  const bad = (why: string) =>
    new InvalidArgumentError(`invalid etcd URL ${JSON.stringify(redact(url))}: ${why}; expected etcd://host:2379[,host2:2379]/prefix or etcds://...`, {
      details: { field: 'url' },
    });
  if (typeof url !== 'string') throw bad('not a string');
  const m = /^(etcds?):\/\/(?:([^@/]*)@)?([^/?#]*)(\/[^?#]*)?$/i.exec(url);
  if (!m) throw bad('malformed (query strings and fragments are not supported)');
  const tls = m[1]!.toLowerCase() === 'etcds';
  let username: string | undefined;
  let password: string | undefined;
  if (m[2] !== undefined) {
    const i = m[2].indexOf(':');
    username = decodeURIComponent(i < 0 ? m[2] : m[2].slice(0, i));
    password = i < 0 ? undefined : decodeURIComponent(m[2].slice(i + 1));
    if (username === '') throw bad('empty user name');
  }
  if (m[3] === '') throw bad('no host');
  const hosts = m[3]!.split(',').map((h) => {
    if (h === '') throw bad('empty host in the host list');
    const { address, port } = parseHostPort(h);
    const host = address.includes(':') ? `[${address}]` : address;
    return `${host}:${port ?? 2379}`;
  });
  const path = m[4] ?? '';
  let prefix = '';
  if (path === '/') prefix = '/';
  else if (path !== '') {
    const inner = path.replace(/^\/|\/$/g, '');
    validateKey(inner, 'etcd URL prefix');
    prefix = `/${inner}/`;
  }
  return {
    tls,
    hosts,
    prefix,
    ...(username !== undefined ? { username } : {}),
    ...(password !== undefined ? { password } : {}),
    url: `${tls ? 'etcds' : 'etcd'}://${hosts.join(',')}${path === '' ? '' : prefix}`,
  };
}

function redact(url: unknown): string {
  return typeof url === 'string' ? url.replace(/\/\/[^@/]*@/, '//***@') : String(url);
}
