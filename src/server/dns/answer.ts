/**
 * What roster's DNS interface answers, independent of transport (./server.ts does UDP, TCP,
 * EDNS and truncation). Authoritative for one domain (default `roster.`), recursion never:
 *
 *   <service>.service.<domain>          SRV (every instance with a port), A / AAAA (IP instances)
 *   <tag>.<service>.service.<domain>    the same, only instances carrying <tag>
 *   _<service>._<tag>.service.<domain>  RFC 2782 form; `_tcp` means any tag
 *   <hex>.addr.<domain>                 A / AAAA: the SRV target of an IP-addressed instance
 *                                       (8 hex digits = IPv4, 32 = IPv6)
 *   <domain>                            SOA (NS / anything else: no data)
 *
 * Only instances that can take traffic are answered: status "up" and health not "critical"
 * ("warning" too unless onlyPassing). A service name is matched exactly, else ignoring letter
 * case (DNS is case-insensitive; roster names are not); a name with a '.' in it cannot carry a
 * tag. SRV weight = the instance's weight, priority 1; the SRV target is the instance's host name,
 * or `<hex>.addr.<domain>` for an IP with its A / AAAA record in the additional section. Answers
 * rotate on every query so naive clients spread load.
 *
 * Outcomes: NOERROR with records; NOERROR with none and the SOA in authority (the name exists,
 * not that type); NXDOMAIN with the SOA (no such service, or no instance that can take traffic);
 * REFUSED for any name outside the domain (no recursion); NOTIMP for opcodes other than QUERY;
 * FORMERR for anything but exactly one question.
 */
import { isIPv4, isIPv6 } from 'node:net';
import type { Answer, Question, RecordType } from 'dns-packet';
import type { ServicesView, ViewInstance } from '../services-view.js';

export type Rcode = 'NOERROR' | 'FORMERR' | 'SERVFAIL' | 'NXDOMAIN' | 'NOTIMP' | 'REFUSED';

export interface Resolution {
  rcode: Rcode;
  /** Authoritative (inside our domain). */
  authoritative: boolean;
  answers: Answer[];
  authorities: Answer[];
  additionals: Answer[];
}

export interface AnswerConfig {
  /** Lower-case, no trailing dot ("roster"). */
  domain: string;
  /** Record TTL in seconds. */
  ttl: number;
  onlyPassing: boolean;
}

const SUPPORTED: ReadonlySet<RecordType | 'ANY'> = new Set(['A', 'AAAA', 'SRV', 'ANY']);

/** `10.0.0.1` → `0a000001`; IPv6 → 32 hex digits. */
export function addrLabel(ip: string): string {
  if (isIPv4(ip)) return ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0')).join('');
  return expandIPv6(ip).replace(/:/g, '');
}

function expandIPv6(ip: string): string {
  let s = ip;
  const v4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(s);
  if (v4) {
    const h = addrLabel(v4[1]!);
    s = s.slice(0, -v4[1]!.length) + `${h.slice(0, 4)}:${h.slice(4)}`;
  }
  const [head, tail] = s.split('::') as [string, string | undefined];
  const a = head === '' ? [] : head.split(':');
  const b = tail === undefined || tail === '' ? [] : tail.split(':');
  const groups = tail === undefined ? a : [...a, ...Array<string>(8 - a.length - b.length).fill('0'), ...b];
  return groups.map((g) => g.padStart(4, '0').toLowerCase()).join(':');
}

function ipFromLabel(label: string): { type: 'A' | 'AAAA'; ip: string } | undefined {
  if (/^[0-9a-f]{8}$/.test(label)) return { type: 'A', ip: [0, 2, 4, 6].map((i) => parseInt(label.slice(i, i + 2), 16)).join('.') };
  if (/^[0-9a-f]{32}$/.test(label)) return { type: 'AAAA', ip: label.match(/.{4}/g)!.join(':') };
  return undefined;
}

export class DnsAnswerer {
  private rotation = 0;
  private index: { revision: number; byLower: Map<string, string[]> } | undefined;

  constructor(
    private readonly view: ServicesView,
    private readonly config: AnswerConfig,
  ) {}

  private soa(): Answer {
    const d = this.config.domain;
    return {
      type: 'SOA',
      name: d,
      ttl: this.config.ttl,
      data: { mname: `ns.${d}`, rname: `hostmaster.${d}`, serial: this.view.revision % 2 ** 32, refresh: 3600, retry: 600, expire: 86400, minimum: this.config.ttl },
    };
  }

  private empty(rcode: Rcode, authoritative: boolean): Resolution {
    return { rcode, authoritative, answers: [], authorities: authoritative ? [this.soa()] : [], additionals: [] };
  }

  /** The service a DNS label names: exact match first, then ignoring case. */
  private service(label: string): string | undefined {
    if (this.view.instances(label).length > 0) return label;
    if (this.index?.revision !== this.view.revision) {
      const byLower = new Map<string, string[]>();
      for (const s of this.view.services()) {
        const k = s.toLowerCase();
        const list = byLower.get(k);
        if (list) list.push(s);
        else byLower.set(k, [s]);
      }
      this.index = { revision: this.view.revision, byLower };
    }
    return this.index.byLower.get(label.toLowerCase())?.[0];
  }

  resolve(q: Question): Resolution {
    const name = q.name.toLowerCase().replace(/\.$/, '');
    const d = this.config.domain;
    if (name !== d && !name.endsWith(`.${d}`)) return this.empty('REFUSED', false);
    if (name === d) {
      if (q.type === 'SOA' || (q.type as string) === 'ANY') return { rcode: 'NOERROR', authoritative: true, answers: [this.soa()], authorities: [], additionals: [] };
      return this.empty('NOERROR', true);
    }
    const rest = q.name.replace(/\.$/, '').slice(0, -(d.length + 1)); // original case: service names are case-sensitive
    const labels = rest.split('.');
    const kind = labels.at(-1)!.toLowerCase();
    if (kind === 'addr' && labels.length === 2) return this.addr(q, labels[0]!.toLowerCase());
    if (kind !== 'service' || labels.length < 2) return this.empty('NXDOMAIN', true);
    const found = this.lookup(labels.slice(0, -1));
    if (!found) return this.empty('NXDOMAIN', true);
    const live = found.instances.filter((v) => this.serves(v));
    if (live.length === 0) return this.empty('NXDOMAIN', true);
    if (!SUPPORTED.has(q.type as RecordType)) return this.empty('NOERROR', true);
    return this.records(q, live);
  }

  private lookup(labels: string[]): { service: string; instances: ViewInstance[] } | undefined {
    let svcLabel: string;
    let tag: string | undefined;
    if (labels.length === 2 && labels[0]!.startsWith('_') && labels[1]!.startsWith('_')) {
      svcLabel = labels[0]!.slice(1);
      const t = labels[1]!.slice(1);
      tag = t.toLowerCase() === 'tcp' ? undefined : t;
    } else {
      const whole = this.service(labels.join('.'));
      if (whole) return { service: whole, instances: this.view.instances(whole) };
      if (labels.length < 2) return undefined;
      tag = labels[0]!;
      svcLabel = labels.slice(1).join('.');
    }
    const service = this.service(svcLabel);
    if (!service) return undefined;
    const all = this.view.instances(service);
    if (tag === undefined) return { service, instances: all };
    const t = tag.toLowerCase();
    const tagged = all.filter((v) => v.instance.tags.some((x) => x.toLowerCase() === t));
    return tagged.length > 0 ? { service, instances: tagged } : undefined;
  }

  private serves(v: ViewInstance): boolean {
    return v.instance.status === 'up' && v.health !== 'critical' && !(this.config.onlyPassing && v.health === 'warning');
  }

  private records(q: Question, live: ViewInstance[]): Resolution {
    const ttl = this.config.ttl;
    const n = live.length;
    const start = this.rotation++ % n;
    const rotated = [...live.slice(start), ...live.slice(0, start)];
    const want = (t: RecordType) => q.type === t || (q.type as string) === 'ANY';
    const answers: Answer[] = [];
    const additionals: Answer[] = [];
    const addrSeen = new Set<string>();
    for (const { instance: i } of rotated) {
      const ip4 = isIPv4(i.address);
      const ip6 = isIPv6(i.address);
      if (want('SRV') && i.port !== undefined) {
        const target = ip4 || ip6 ? `${addrLabel(i.address)}.addr.${this.config.domain}` : i.address.replace(/\.$/, '');
        answers.push({ type: 'SRV', name: q.name, ttl, data: { priority: 1, weight: Math.min(i.weight, 65535), port: i.port, target } });
        if ((ip4 || ip6) && !addrSeen.has(target)) {
          addrSeen.add(target);
          additionals.push({ type: ip4 ? 'A' : 'AAAA', name: target, ttl, data: i.address });
        }
      }
      if ((want('A') && ip4) || (want('AAAA') && ip6)) {
        if (!answers.some((a) => (a.type === 'A' || a.type === 'AAAA') && a.data === i.address)) answers.push({ type: ip4 ? 'A' : 'AAAA', name: q.name, ttl, data: i.address });
      }
    }
    if (answers.length === 0) return this.empty('NOERROR', true); // the name exists, not this type
    return { rcode: 'NOERROR', authoritative: true, answers, authorities: [], additionals: q.type === 'SRV' ? additionals : [] };
  }

  private addr(q: Question, label: string): Resolution {
    const ip = ipFromLabel(label);
    if (!ip) return this.empty('NXDOMAIN', true);
    if (q.type !== ip.type && (q.type as string) !== 'ANY') return this.empty('NOERROR', true);
    return { rcode: 'NOERROR', authoritative: true, answers: [{ type: ip.type, name: q.name, ttl: this.config.ttl, data: ip.ip }], authorities: [], additionals: [] };
  }
}

