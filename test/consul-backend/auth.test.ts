/**
 * consul:// auth and addressing: the ACL token travels as the X-Consul-Token header on every
 * request (never `?token=`), from the option or $CONSUL_HTTP_TOKEN; a refused token is a clear
 * error; `datacenter` adds `?dc=` where Consul takes it (KV, txn, sessions, health) and not on agent
 * endpoints; consuls:// speaks TLS with a CA and a client certificate (through a TLS-terminating
 * proxy in front of roster server's /v1: the server itself serves plain HTTP).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer as createHttpServer, type IncomingMessage } from 'node:http';
import { connect, type AddressInfo, type Server as NetServer } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { createServer as createTlsServer } from 'node:tls';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsulBackend } from '../../src/backends/consul/index.js';
import { RosterError } from '../../src/core/errors.js';
import { Registrar } from '../../src/registry/index.js';
import { consulCatalogLayout } from '../../src/registry/consul-catalog.js';
import { startConsulServer, type ConsulTestServer } from '../consul/helpers.js';
import { generateTls, type TlsFiles } from '../helpers/etcd.js';
import { Reader, readSnapshot, uniquePrefix } from '../helpers/watch.js';

const seen: { url: string; token: string | undefined; need: string }[] = [];
let srv: ConsulTestServer;

beforeAll(async () => {
  srv = await startConsulServer({
    consul: {
      datacenter: 'dc7',
      sessionTtlMin: '250ms',
      authorize: (token, need, req: IncomingMessage) => {
        const h = req.headers['x-consul-token'];
        seen.push({ url: req.url ?? '', token: typeof h === 'string' ? h : undefined, need: `${need.resource}:${need.access}` });
        if (token !== 'secret-token') throw new RosterError('INVALID_ARGUMENT', 'ACL not found');
      },
    },
  });
});
afterAll(async () => {
  await srv?.cleanup();
});

describe('ACL token', () => {
  it('is sent as X-Consul-Token on every request, never as ?token=', async () => {
    seen.length = 0;
    const b = await ConsulBackend.open(`consul://127.0.0.1:${srv.port}/auth`, { token: 'secret-token', datacenter: 'dc7' });
    try {
      const p = uniquePrefix('tok');
      const s = await b.session({ ttl: 1000 });
      await b.put(`${p}k`, 'v', { session: s });
      expect((await b.get(`${p}k`))?.value).toBe('v');
      const w = new Reader(b.watch(p));
      await readSnapshot(w);
      await b.put(`${p}k2`, 'v2', { ifAbsent: true });
      expect(await w.next()).toMatchObject({ type: 'put', key: `${p}k2` });
      await w.return();
      await b.delete(`${p}k2`);
      const r = new Registrar(b, { ttl: 1000, layout: consulCatalogLayout() });
      await r.register({ service: `auth-${process.pid}`, id: 'x', address: '127.0.0.1', port: 1 });
      await r.close();
      await s.close();
    } finally {
      await b.close();
    }
    expect(seen.length).toBeGreaterThan(8);
    expect(seen.filter((x) => x.token !== 'secret-token')).toEqual([]);
    expect(seen.filter((x) => /[?&]token=/.test(x.url))).toEqual([]);
    // Every kind of access went through the token check.
    expect(new Set(seen.map((x) => x.need))).toEqual(new Set(['key:read', 'key:write', 'session:write', 'service:write', 'service:read', 'agent:read']));
  });

  it('comes from $CONSUL_HTTP_TOKEN when no option is given; a refused token is INVALID_ARGUMENT', async () => {
    seen.length = 0;
    process.env.CONSUL_HTTP_TOKEN = 'secret-token';
    const fromEnv = await ConsulBackend.open(`consul://127.0.0.1:${srv.port}/auth`, { datacenter: 'dc7' });
    delete process.env.CONSUL_HTTP_TOKEN;
    const wrong = await ConsulBackend.open(`consul://127.0.0.1:${srv.port}/auth`, { token: 'nope', datacenter: 'dc7' });
    const none = await ConsulBackend.open(`consul://127.0.0.1:${srv.port}/auth`, { datacenter: 'dc7' });
    try {
      await fromEnv.put('env/k', '1');
      expect(seen.at(-1)?.token).toBe('secret-token');
      for (const b of [wrong, none]) {
        await expect(b.get('env/k')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('ACL not found') });
        await expect(b.session({ ttl: 1000 })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      }
      // A watch that the agent refuses ends with the error instead of retrying forever.
      const w = new Reader(none.watch('env/'));
      await expect(w.next(5000)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    } finally {
      await fromEnv.close();
      await wrong.close();
      await none.close();
    }
    await expect(ConsulBackend.open(`consul://127.0.0.1:${srv.port}`, { token: 'two\nlines' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });

  it('a 403 from Consul (plain text, as Consul sends it) is INVALID_ARGUMENT naming the token', async () => {
    const fake = createHttpServer((_req, res) => res.writeHead(403, { 'content-type': 'text/plain' }).end('Permission denied'));
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
    const b = await ConsulBackend.open(`consul://127.0.0.1:${(fake.address() as AddressInfo).port}`, { token: 't' });
    try {
      await expect(b.put('k', 'v')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/denied permission.*ACL token.*Permission denied/) });
    } finally {
      await b.close();
      await new Promise((r) => fake.close(r));
    }
  });
});

describe('datacenter', () => {
  it('adds ?dc= to KV, txn, session and health requests, not to agent endpoints; an unknown one is INVALID_ARGUMENT', async () => {
    seen.length = 0;
    const b = await ConsulBackend.open(`consul://127.0.0.1:${srv.port}/dc`, { token: 'secret-token', datacenter: 'dc7' });
    try {
      const s = await b.session({ ttl: 1000 });
      await b.put('k', 'v', { session: s });
      await b.list('');
      const r = new Registrar(b, { ttl: 1000, layout: consulCatalogLayout() });
      await r.register({ service: `dc-${process.pid}`, id: 'x', address: '127.0.0.1', port: 1 });
      await r.close();
      await s.close();
    } finally {
      await b.close();
    }
    const paths = seen.map((x) => x.url);
    for (const u of paths.filter((x) => /^\/v1\/(kv|txn|session|health)/.test(x))) expect(u).toMatch(/[?&]dc=dc7(&|$)/);
    for (const u of paths.filter((x) => x.startsWith('/v1/agent/'))) expect(u).not.toMatch(/dc=/);
    expect(paths.some((x) => x.startsWith('/v1/txn'))).toBe(true);
    expect(paths.some((x) => x.startsWith('/v1/agent/service/register'))).toBe(true);
    const other = await ConsulBackend.open(`consul://127.0.0.1:${srv.port}/dc`, { token: 'secret-token', datacenter: 'dc9' });
    try {
      await expect(other.put('k', 'v')).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('dc9') });
    } finally {
      await other.close();
    }
    await expect(ConsulBackend.open(`consul://127.0.0.1:${srv.port}`, { datacenter: 'dc 7' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});

describe('consuls:// (TLS)', () => {
  let dir: string;
  let tls: TlsFiles;
  let proxy: NetServer;
  let port: number;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'roster-consul-tls-'));
    tls = await generateTls(dir);
    proxy = createTlsServer({ key: await readFile(tls.serverKey), cert: await readFile(tls.serverCert), ca: await readFile(tls.ca), requestCert: true, rejectUnauthorized: true }, (sock) => {
      const up = connect(srv.port, '127.0.0.1');
      sock.pipe(up).pipe(sock);
      up.on('error', () => sock.destroy());
      sock.on('error', () => up.destroy());
    });
    await new Promise<void>((r) => proxy.listen(0, '127.0.0.1', r));
    port = (proxy.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise((r) => proxy?.close(r));
    await rm(dir, { recursive: true, force: true });
  });

  it('connects with a CA and a client certificate (paths or PEM); refused without the certificate', async () => {
    const byPath = await ConsulBackend.open(`consuls://127.0.0.1:${port}/tls`, { token: 'secret-token', datacenter: 'dc7', tls: { ca: tls.ca, cert: tls.clientCert, key: tls.clientKey } });
    const byPem = await ConsulBackend.open(`consuls://127.0.0.1:${port}/tls`, {
      token: 'secret-token',
      datacenter: 'dc7',
      tls: { ca: await readFile(tls.ca, 'utf8'), cert: await readFile(tls.clientCert, 'utf8'), key: await readFile(tls.clientKey) },
    });
    const noCert = await ConsulBackend.open(`consuls://127.0.0.1:${port}/tls`, { token: 'secret-token', datacenter: 'dc7', tls: { ca: tls.ca }, requestTimeout: 2000 });
    try {
      expect(byPath.url).toBe(`consuls://127.0.0.1:${port}/tls/`);
      const s = await byPath.session({ ttl: 1000 });
      await byPath.put('k', 'over tls', { session: s });
      expect(await byPem.get('k')).toMatchObject({ value: 'over tls', session: s.id });
      await s.close();
      await expect(noCert.get('k')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    } finally {
      await byPath.close();
      await byPem.close();
      await noCert.close();
    }
    await expect(ConsulBackend.open(`consul://127.0.0.1:${port}`, { tls: { ca: tls.ca } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringContaining('consuls://') });
    await expect(ConsulBackend.open(`consuls://127.0.0.1:${port}`, { tls: { cert: tls.clientCert } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
  });
});
