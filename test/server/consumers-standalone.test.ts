/**
 * The DNS interface and the Prometheus SD handler outside the roster server, over any backend (a
 * shared memory:// store here): the live view follows registrations and deregistrations, and a
 * non-loopback DNS listener is refused unless allowed.
 */
import { createSocket } from 'node:dgram';
import { createServer } from 'node:http';
import * as packet from 'dns-packet';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MemoryBackend } from '../../src/backends/memory/index.js';
import { Registrar } from '../../src/registry/index.js';
import { createPromSdHandler, startDnsServer, type DnsServer } from '../../src/server/index.js';
import { eventually } from '../helpers/watch.js';

let backend: MemoryBackend;
let dns: DnsServer;

/** dns-packet decodes `rcode` at run time; its type declarations leave it out. */
type Reply = packet.DecodedPacket & { rcode: string };

async function query(name: string, type: 'A' | 'SRV'): Promise<Reply> {
  const sock = createSocket('udp4');
  try {
    return await new Promise((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no DNS answer for ${name}`)), 2000);
      sock.once('message', (m) => {
        clearTimeout(t);
        resolve(packet.decode(m) as Reply);
      });
      sock.send(packet.encode({ type: 'query', id: 1, questions: [{ type, name }] }), dns.port, '127.0.0.1');
    });
  } finally {
    sock.close();
  }
}

describe('DNS and Prometheus SD over a backend, without the roster server', () => {
  beforeAll(async () => {
    backend = await MemoryBackend.open(`memory://standalone-${process.pid}`);
    dns = await startDnsServer({ backend, port: 0, domain: 'svc.example', ttl: 1000 });
  });
  afterAll(async () => {
    await dns?.close();
    await backend?.close();
  });

  it('DNS follows the backend live, in its own domain', async () => {
    expect((await query('api.service.svc.example', 'A')).rcode).toBe('NXDOMAIN');
    const reg = new Registrar(backend, { ttl: 5000 });
    await reg.register({ service: 'api', id: 'a1', address: '10.3.0.1', port: 7000 });
    await eventually(async () => (await query('api.service.svc.example', 'A')).rcode === 'NOERROR', 2000, 'registration visible over DNS');
    const srv = await query('api.service.svc.example', 'SRV');
    expect(srv.answers).toEqual([expect.objectContaining({ type: 'SRV', ttl: 1, data: expect.objectContaining({ port: 7000, target: '0a030001.addr.svc.example' }) })]);
    expect((await query('api.service.roster', 'A')).rcode).toBe('REFUSED');
    await reg.close();
    await eventually(async () => (await query('api.service.svc.example', 'A')).rcode === 'NXDOMAIN', 2000, 'deregistration visible over DNS');
  });

  it('the SD handler mounts on a plain node:http server and follows the backend', async () => {
    const sd = createPromSdHandler({ backend });
    const http = createServer(sd.handle);
    await new Promise<void>((r) => http.listen(0, '127.0.0.1', () => r()));
    const url = `http://127.0.0.1:${(http.address() as { port: number }).port}/sd`;
    const reg = new Registrar(backend, { ttl: 5000 });
    try {
      await reg.register({ service: 'web', id: 'w1', address: '10.3.0.2', port: 80 });
      const ids = async () => ((await (await fetch(url)).json()) as { labels: Record<string, string> }[]).map((g) => g.labels.__meta_roster_id);
      await eventually(async () => (await ids()).includes('w1'), 2000, 'w1 listed');
      await reg.deregister({ service: 'web', id: 'w1' });
      await eventually(async () => !(await ids()).includes('w1'), 2000, 'w1 gone');
      const bad = await fetch(`${url}?x=1`);
      expect(bad.status).toBe(400);
    } finally {
      await reg.close();
      await sd.close();
      await new Promise((r) => http.close(r));
    }
  });

  it('refuses to listen beyond loopback unless allowed, and validates its options', async () => {
    await expect(startDnsServer({ backend, host: '0.0.0.0', port: 0 })).rejects.toThrow(/DNS has no authentication/);
    await expect(startDnsServer({ backend, port: 0, domain: 'bad domain' })).rejects.toThrow(/invalid DNS domain/);
    await expect(startDnsServer({ backend, port: 0, maxUdpSize: 100 })).rejects.toThrow(/512-4096/);
    await expect(startDnsServer({ port: 0 })).rejects.toThrow(/exactly one of engine or backend/);
  });
});
