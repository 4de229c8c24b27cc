import { InvalidArgumentError } from '../../core/errors.js';
import { parseDuration } from '../../core/duration.js';
import { parseHostPort, validateKey } from '../../core/names.js';
import { ACL_CREATOR, ACL_OPEN, ACL_READ_CREATOR, type Acl } from './conn.js';

export interface ZkUrl {
  /** "host:port,host:port" as given (ports defaulted to 2181). */
  servers: string;
  /** Sorted server list: identifies the ensemble for the process-wide journal. */
  ensemble: string;
  /** Chroot without leading or trailing '/', '' for none. */
  chroot: string;
  /** Canonical URL without credentials. */
  url: string;
  /** Digest credentials from the URL's userinfo, if any. */
  auth?: string;
}

/**
 * `zk://[user:password@]host[:port][,host[:port]...][/chroot]` (also `zookeeper://`). IPv6
 * addresses are bracketed (`zk://[::1]:2181,[fd00::2]/app`); a bare one (`zk://::1/app`) takes the
 * default port.
 */
export function parseZkUrl(url: string): ZkUrl {
  const m = /^(?:zk|zookeeper):\/\/(?:([^@/]*)@)?([^/?#]+)(\/[^?#]*)?$/i.exec(url);
  if (!m) {
    throw new InvalidArgumentError(`invalid ZooKeeper URL ${JSON.stringify(url)}: expected zk://host:2181[,host2:2181]/chroot`);
  }
  const userinfo = m[1] !== undefined ? decodeURIComponent(m[1]) : undefined;
  const hosts = m[2]!.split(',').map((h) => h.trim());
  const servers: string[] = [];
  for (const h of hosts) {
    let hp: { address: string; port?: number };
    try {
      hp = parseHostPort(h);
    } catch (e) {
      throw new InvalidArgumentError(`invalid ZooKeeper server ${JSON.stringify(h)} in ${JSON.stringify(url)}: expected host, host:port or [ipv6]:port`, { cause: e });
    }
    servers.push(`${hp.address.includes(':') ? `[${hp.address}]` : hp.address}:${hp.port ?? 2181}`);
  }
  const chroot = (m[3] ?? '').replace(/^\/+|\/+$/g, '');
  if (chroot !== '') validateKey(chroot, 'ZooKeeper chroot');
  const s = servers.join(',');
  return {
    servers: s,
    ensemble: [...servers].sort().join(','),
    chroot,
    url: `zk://${s}${chroot ? `/${chroot}` : '/'}`,
    ...(userinfo ? { auth: userinfo } : {}),
  };
}

const PERM_BITS: Record<string, number> = { r: 1, w: 2, c: 4, d: 8, a: 16 };

export type AclOption = 'open' | 'creator' | 'creator-read' | readonly { scheme: string; id: string; perms: string | number }[];

/**
 * ACL for every znode roster creates:
 * - 'open' (default): world:anyone with all permissions, as Curator and zkCli create by default;
 * - 'creator': only the authenticated identity that created the node (needs `auth`);
 * - 'creator-read': the creator has all permissions, everyone may read (discovery by others);
 * - a list of { scheme, id, perms } where perms is a subset of "rwcda" or ZooKeeper's bit mask.
 */
export function parseAcl(opt: unknown, hasAuth: boolean): readonly Acl[] {
  if (opt === undefined || opt === 'open') return ACL_OPEN;
  if (opt === 'creator' || opt === 'creator-read') {
    if (!hasAuth) throw new InvalidArgumentError(`ZooKeeper acl "${opt}" needs credentials: pass auth: "user:password"`);
    return opt === 'creator' ? ACL_CREATOR : ACL_READ_CREATOR;
  }
  if (!Array.isArray(opt) || opt.length === 0) {
    throw new InvalidArgumentError('invalid ZooKeeper acl: expected "open", "creator", "creator-read" or a non-empty list of { scheme, id, perms }');
  }
  return opt.map((a: unknown, i) => {
    const o = (a ?? {}) as { scheme?: unknown; id?: unknown; perms?: unknown };
    if (typeof o.scheme !== 'string' || o.scheme === '' || typeof o.id !== 'string') {
      throw new InvalidArgumentError(`invalid ZooKeeper acl entry ${i}: expected { scheme: string, id: string, perms }`);
    }
    let perms = 0;
    if (typeof o.perms === 'number' && Number.isInteger(o.perms) && o.perms >= 1 && o.perms <= 31) perms = o.perms;
    else if (typeof o.perms === 'string' && /^[rwcda]+$/.test(o.perms)) for (const ch of o.perms) perms |= PERM_BITS[ch]!;
    else throw new InvalidArgumentError(`invalid ZooKeeper acl entry ${i} perms ${JSON.stringify(o.perms)}: expected letters of "rwcda" or 1-31`);
    return { scheme: o.scheme, id: o.id, perms };
  });
}

export function parseAuth(opt: unknown, fromUrl: string | undefined): string[] {
  const list = opt === undefined ? [] : Array.isArray(opt) ? opt : [opt];
  const out: string[] = [];
  for (const a of list) {
    if (typeof a !== 'string' || !/^[^:]+:.*$/.test(a)) {
      throw new InvalidArgumentError('invalid ZooKeeper auth: expected "user:password" (digest scheme) or a list of them');
    }
    out.push(a);
  }
  if (fromUrl !== undefined) {
    if (!/^[^:]+:.*$/.test(fromUrl)) throw new InvalidArgumentError('invalid ZooKeeper URL credentials: expected user:password@');
    out.push(fromUrl);
  }
  return out;
}

export function durationOption(v: unknown, what: string, dflt: number, min = 1, max = 24 * 3_600_000): number {
  if (v === undefined) return dflt;
  return parseDuration(v, what, { min, max });
}
