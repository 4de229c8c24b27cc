/**
 * roster server's DNS interface with `dig` (Debian dnsutils) as the client: SRV and A / AAAA of
 * instances registered through the HTTP API by a Registrar, tags, health and draining filtered
 * out, a deregistration followed within one TTL, REFUSED outside the domain (no recursion),
 * NXDOMAIN with the SOA, and a large answer truncated over UDP (TC) then retried by dig over TCP.
 * Malformed and unsupported messages are checked with raw packets (dns-packet) over UDP.
 */
import { execFile } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { existsSync } from 'node:fs';
import { promisify } from 'node:util';
import * as packet from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBackend } from '../../src/index.js';
import type { Backend } from '../../src/contract/types.js';
import { Registrar } from '../../src/registry/index.js';
import { startInProcess, type InProcessServer } from '../helpers/server.js';
import { eventually } from '../helpers/watch.js';

const execFileP = promisify(execFile);
const TTL_S = 2;

interface Rr {
  name: string;
  ttl: number;
  type: string;
  data: string;
}
interface Dig {
  status: string;
  flags: string[];
  answer: Rr[];
  authority: Rr[];
  additional: Rr[];
  raw: string;
}

let srv: InProcessServer;
let backend: Backend;
let registrar: Registrar;
let port: number;

/** Run dig against the server and parse its default output. */
async function dig(...args: string[]): Promise<Dig> {
  const { stdout } = await execFileP('dig', [`@127.0.0.1`, '-p', String(port), '+tries=1', '+time=3', ...args], { timeout: 20_000 });
  const out: Dig = { status: '', flags: [], answer: [], authority: [], additional: [], raw: stdout };
  let section: Rr[] | undefined;
  for (const line of stdout.split('\n')) {
    const h = /status: (\w+)/.exec(line);
    if (h) out.status = h[1]!;
    const f = /;; flags: ([a-z ]+);/.exec(line);
    if (f) out.flags = f[1]!.trim().split(/\s+/);
    if (line.startsWith(';; ANSWER SECTION')) section = out.answer;
    else if (line.startsWith(';; AUTHORITY SECTION')) section = out.authority;
    else if (line.startsWith(';; ADDITIONAL SECTION')) section = out.additional;
    else if (line.trim() === '' || line.startsWith(';')) section = line.trim() === '' ? undefined : section;
    else if (section) {
      const [name, ttl, , type, ...data] = line.split(/\s+/);
      section.push({ name: name!, ttl: Number(ttl), type: type!, data: data.join(' ') });
    }
  }
  return out;
}

const srvPorts = (d: Dig) => d.answer.filter((r) => r.type === 'SRV').map((r) => Number(r.data.split(' ')[2])).sort((a, b) => a - b);

describe.skipIf(!existsSync('/usr/bin/dig'))('DNS interface (roster server --dns) with dig', () => {
  beforeAll(async () => {
    srv = await startInProcess({ dns: { port: 0, ttl: `${TTL_S}s` } });
    port = srv.server.dns!.port;
    backend = await openBackend(srv.url);
    registrar = new Registrar(backend, { ttl: 5000 });
    await registrar.register({ service: 'orders', id: 'o1', address: '10.0.0.1', port: 8001, tags: ['blue'], weight: 5 });
    await registrar.register({ service: 'orders', id: 'o2', address: '10.0.0.2', port: 8002, tags: ['green'] });
    await registrar.register({ service: 'orders', id: 'o3', address: '10.0.0.3', port: 8003, tags: ['blue'] });
    await registrar.register({ service: 'orders', id: 'o6', address: 'fd00::6', port: 8006 });
    await registrar.register({ service: 'orders', id: 'oh', address: 'orders-h.internal', port: 8007 });
    await registrar.register({ service: 'orders', id: 'od', address: '10.0.0.9', port: 8009, status: 'draining' });
    // What the health-check status looks like once checks write it: a critical instance is left out.
    await backend.put('services/orders/oc', JSON.stringify({ service: 'orders', id: 'oc', address: '10.0.0.8', port: 8008, health: 'critical' }));
  }, 60_000);
  afterAll(async () => {
    await registrar?.close();
    await backend?.close();
    await srv?.cleanup();
  });

  it('SRV: every instance that can take traffic, with weights, ports, targets and their A / AAAA as additional records', async () => {
    const d = await dig('orders.service.roster', 'SRV');
    expect(d.status).toBe('NOERROR');
    expect(d.flags).toContain('aa');
    expect(d.flags).not.toContain('ra');
    expect(srvPorts(d)).toEqual([8001, 8002, 8003, 8006, 8007]); // not draining 8009, not critical 8008
    const byPort = new Map(d.answer.map((r) => [Number(r.data.split(' ')[2]), r]));
    expect(byPort.get(8001)!.data).toBe('1 5 8001 0a000001.addr.roster.');
    expect(byPort.get(8007)!.data).toBe('1 1 8007 orders-h.internal.');
    expect(d.answer.every((r) => r.ttl === TTL_S)).toBe(true);
    expect(d.additional.map((r) => `${r.name} ${r.type} ${r.data}`).sort()).toEqual([
      '0a000001.addr.roster. A 10.0.0.1',
      '0a000002.addr.roster. A 10.0.0.2',
      '0a000003.addr.roster. A 10.0.0.3',
      'fd000000000000000000000000000006.addr.roster. AAAA fd00::6',
    ]);
    // The SRV target resolves too.
    expect((await dig('0a000002.addr.roster', 'A')).answer.map((r) => r.data)).toEqual(['10.0.0.2']);
  });

  it('A and AAAA of the service; tags as <tag>.<service> and the RFC 2782 form', async () => {
    expect((await dig('orders.service.roster', 'A')).answer.map((r) => r.data).sort()).toEqual(['10.0.0.1', '10.0.0.2', '10.0.0.3']);
    expect((await dig('orders.service.roster', 'AAAA')).answer.map((r) => r.data)).toEqual(['fd00::6']);
    expect(srvPorts(await dig('blue.orders.service.roster', 'SRV'))).toEqual([8001, 8003]);
    expect(srvPorts(await dig('_orders._blue.service.roster', 'SRV'))).toEqual([8001, 8003]);
    expect(srvPorts(await dig('_orders._tcp.service.roster', 'SRV'))).toEqual([8001, 8002, 8003, 8006, 8007]);
    expect(srvPorts(await dig('ORDERS.Service.Roster', 'SRV'))).toEqual([8001, 8002, 8003, 8006, 8007]);
  });

  it('NXDOMAIN (with the SOA) for unknown names, NOERROR/no data for other types, REFUSED outside the domain', async () => {
    const nx = await dig('nope.service.roster', 'SRV');
    expect(nx.status).toBe('NXDOMAIN');
    expect(nx.authority.map((r) => r.type)).toEqual(['SOA']);
    expect((await dig('red.orders.service.roster', 'SRV')).status).toBe('NXDOMAIN');
    const txt = await dig('orders.service.roster', 'TXT');
    expect([txt.status, txt.answer.length, txt.authority[0]?.type]).toEqual(['NOERROR', 0, 'SOA']);
    const out = await dig('example.com', 'A');
    expect(out.status).toBe('REFUSED');
    expect(out.flags).not.toContain('ra');
    expect(out.flags).not.toContain('aa');
    expect((await dig('roster', 'SOA')).answer[0]?.type).toBe('SOA');
  });

  it('follows a deregistration within one TTL', async () => {
    expect(srvPorts(await dig('orders.service.roster', 'SRV'))).toContain(8002);
    const t0 = performance.now();
    await registrar.deregister({ service: 'orders', id: 'o2' });
    let answers = 0;
    await eventually(async () => {
      answers++;
      return !srvPorts(await dig('orders.service.roster', 'SRV')).includes(8002);
    }, TTL_S * 1000, 'deregistered instance gone from the SRV answer');
    const ms = performance.now() - t0;
    console.log(`dns: deregistration reflected after ${Math.round(ms)} ms (${answers} dig quer${answers === 1 ? 'y' : 'ies'}; TTL ${TTL_S} s)`);
    expect(ms).toBeLessThan(TTL_S * 1000);
    expect((await dig('orders.service.roster', 'A')).answer.map((r) => r.data).sort()).toEqual(['10.0.0.1', '10.0.0.3']);
    await registrar.register({ service: 'orders', id: 'o2', address: '10.0.0.2', port: 8002, tags: ['green'] });
  });

  it('a large answer is truncated over UDP (TC) and dig retries it over TCP', async () => {
    const big = new Registrar(backend, { ttl: 5000 });
    try {
      for (let n = 0; n < 80; n++) await big.register({ service: 'big', id: `b${n}`, address: `10.1.${n >> 8}.${n & 255}`, port: 9000 + n });
      const udpOnly = await dig('big.service.roster', 'SRV', '+ignore', '+notcp');
      expect(udpOnly.flags).toContain('tc');
      expect(udpOnly.answer.length).toBeGreaterThan(0);
      expect(udpOnly.answer.length).toBeLessThan(80);
      expect(udpOnly.additional).toEqual([]);
      const noEdns = await dig('big.service.roster', 'SRV', '+ignore', '+notcp', '+noedns');
      expect(noEdns.flags).toContain('tc');
      expect(noEdns.answer.length).toBeLessThan(udpOnly.answer.length); // 512 bytes without EDNS

      const retried = await dig('big.service.roster', 'SRV');
      expect(retried.raw).toContain('Truncated, retrying in TCP mode');
      expect(retried.flags).not.toContain('tc');
      expect(srvPorts(retried)).toEqual(Array.from({ length: 80 }, (_, n) => 9000 + n));
      expect(retried.additional.filter((r) => r.type === 'A')).toHaveLength(80);
      console.log(`dns: 80 SRV records: UDP answer truncated to ${udpOnly.answer.length} (EDNS 1232 B) / ${noEdns.answer.length} (512 B), full answer over TCP`);
      expect(srv.server.dns!.stats.truncated).toBeGreaterThanOrEqual(3);
      expect(srv.server.dns!.stats.tcpQueries).toBeGreaterThanOrEqual(1);
    } finally {
      await big.close();
    }
  });

  it('malformed, multi-question, non-QUERY and response messages: FORMERR, NOTIMP, silence; the server keeps answering', async () => {
    const sock = createSocket('udp4');
    const ask = (msg: Buffer) =>
      new Promise<packet.DecodedPacket | undefined>((resolve) => {
        const t = setTimeout(() => (sock.off('message', on), resolve(undefined)), 500);
        const on = (m: Buffer) => {
          clearTimeout(t);
          sock.off('message', on);
          resolve(packet.decode(m));
        };
        sock.on('message', on);
        sock.send(msg, port, '127.0.0.1');
      });
    try {
      const garbage = Buffer.concat([Buffer.from([0x12, 0x34, 0x01, 0x00, 0x00, 0x01]), Buffer.alloc(20, 0xff)]);
      expect((await ask(garbage))).toMatchObject({ id: 0x1234, rcode: 'FORMERR' });
      const two = packet.encode({ type: 'query', id: 7, questions: [{ type: 'A', name: 'orders.service.roster' }, { type: 'A', name: 'x.service.roster' }] });
      expect(await ask(two)).toMatchObject({ id: 7, rcode: 'FORMERR' });
      const notify = packet.encode({ type: 'query', id: 8, flags: 4 << 11, questions: [{ type: 'SOA', name: 'roster' }] });
      expect(await ask(notify)).toMatchObject({ id: 8, rcode: 'NOTIMP' });
      const response = packet.encode({ type: 'response', id: 9, questions: [{ type: 'A', name: 'orders.service.roster' }] });
      expect(await ask(response)).toBeUndefined();
      expect(await ask(Buffer.from([1, 2, 3]))).toBeUndefined();
      const ok = await ask(packet.encode({ type: 'query', id: 10, flags: packet.RECURSION_DESIRED, questions: [{ type: 'A', name: 'orders.service.roster' }] }));
      expect(ok).toMatchObject({ id: 10, rcode: 'NOERROR', flag_rd: true, flag_ra: false, flag_aa: true });
      expect(ok!.answers).toHaveLength(3);
    } finally {
      sock.close();
    }
  });
});
