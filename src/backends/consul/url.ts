import { InvalidArgumentError } from '../../core/errors.js';
import { parseHostPort, validateKey } from '../../core/names.js';

/**
 * `consul://host[:port][,host2[:port]...][/prefix]`, `consuls://` for HTTPS.
 *
 * The hosts are Consul agents' HTTP addresses (port 8500, 8501 for consuls://); requests go to the
 * first that answers. The path is a KV key prefix: contract key `k` ↔ Consul key `<prefix>/k`.
 *   consul://h:8500/roster   → prefix "roster/"  (key "services/a/x" ↔ Consul key "roster/services/a/x")
 *   consul://h:8500 or h:8500/ → prefix ""       (contract keys are Consul keys)
 * Consul keys have no leading '/', so both root forms mean the same. No credentials in the URL:
 * the ACL token is an option (sent as X-Consul-Token), never part of an address that gets logged.
 */
export interface ConsulUrl {
  readonly tls: boolean;
  /** `host:port` (IPv6 bracketed), in URL order. */
  readonly hosts: readonly string[];
  /** '' or a prefix ending in '/'. */
  readonly prefix: string;
  /** Canonical URL. */
  readonly url: string;
}

export function parseConsulUrl(url: string): ConsulUrl {
  const bad = (why: string) =>
    new InvalidArgumentError(`invalid Consul URL ${JSON.stringify(String(url).replace(/\/\/[^@/]*@/, '//***@'))}: ${why}; expected consul://host:8500[,host2:8500]/prefix or consuls://...`, {
      details: { field: 'url' },
    });
  if (typeof url !== 'string') throw bad('not a string');
  const m = /^(consuls?):\/\/([^/?#]*)(\/[^?#]*)?$/i.exec(url);
  if (!m) throw bad('malformed (query strings and fragments are not supported)');
  const tls = m[1]!.toLowerCase() === 'consuls';
  if (m[2]!.includes('@')) throw bad('credentials do not belong in the URL: pass the ACL token as the `token` option');
  if (m[2] === '') throw bad('no host');
  const hosts = m[2]!.split(',').map((h) => {
    if (h === '') throw bad('empty host in the host list');
    const { address, port } = parseHostPort(h);
    const host = address.includes(':') ? `[${address}]` : address;
    return `${host}:${port ?? (tls ? 8501 : 8500)}`;
  });
  const inner = (m[3] ?? '').replace(/^\/+|\/+$/g, '');
  if (inner !== '') validateKey(inner, 'Consul URL prefix');
  const prefix = inner === '' ? '' : `${inner}/`;
  return { tls, hosts, prefix, url: `${tls ? 'consuls' : 'consul'}://${hosts.join(',')}${prefix === '' ? '' : `/${prefix}`}` };
}
