/**
 * The backend conformance suite against a real etcd (see test/helpers/etcd.ts), with restart
 * (kill -9 + start on the same data dir) and compaction, plus etcd-specific checks: the URL prefix
 * mapping, raw etcd keys as etcdctl sees them, and option validation.
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdBackend, parseEtcdUrl } from '../../src/backends/etcd/index.js';
import { conformance } from '../../src/testing/conformance.js';
import { freePort, generateTls, startEtcd, type EtcdServer, type TlsFiles } from '../helpers/etcd.js';
import { Reader, uniquePrefix } from '../helpers/watch.js';

let etcd: EtcdServer;
beforeAll(async () => {
  etcd = await startEtcd();
});
afterAll(async () => {
  await etcd?.stop();
});

describe('etcd:// conformance', () => {
  conformance({ describe, it, expect, beforeAll, afterAll }, {
    open: () => EtcdBackend.open(etcd.url('/conformance')),
    ttl: 1000,
    restart: () => etcd.restart(),
    compact: async () => void (await etcd.compact()),
  });
});

describe('etcd URL and key mapping', () => {
  it('parses hosts, default port, credentials, TLS and the prefix forms', () => {
    expect(parseEtcdUrl('etcd://h:2379/roster')).toMatchObject({ tls: false, hosts: ['h:2379'], prefix: '/roster/', url: 'etcd://h:2379/roster/' });
    expect(parseEtcdUrl('etcd://h:2379/roster/')).toMatchObject({ prefix: '/roster/' });
    expect(parseEtcdUrl('etcd://h:2379/')).toMatchObject({ prefix: '/', url: 'etcd://h:2379/' });
    expect(parseEtcdUrl('etcd://h:2379')).toMatchObject({ prefix: '', url: 'etcd://h:2379' });
    expect(parseEtcdUrl('etcd://a,b:1234,[::1]:5/x/y')).toMatchObject({ hosts: ['a:2379', 'b:1234', '[::1]:5'], prefix: '/x/y/' });
    const withCreds = parseEtcdUrl('etcds://us%40er:p%3Ass@h:2379/p');
    expect(withCreds).toMatchObject({ tls: true, username: 'us@er', password: 'p:ss', url: 'etcds://h:2379/p/' });
    expect(withCreds.url).not.toContain('p:ss');
    for (const bad of ['http://h:2379', 'etcd://', 'etcd://h:99999/', 'etcd://h,,x/', 'etcd://h/a//b', 'etcd://h/a b', 'etcd://h/?x=1', 'etcd://:pw@h/']) {
      expect(() => parseEtcdUrl(bad), bad).toThrow(expect.objectContaining({ code: 'INVALID_ARGUMENT' }));
    }
  });

  it('maps contract keys onto etcd keys under the URL prefix, as etcdctl sees them', async () => {
    const p = uniquePrefix('map');
    const rooted = await EtcdBackend.open(etcd.url('/roster'));
    const slash = await EtcdBackend.open(etcd.url('/'));
    const bare = await EtcdBackend.open(etcd.url(''));
    try {
      await rooted.put(`${p}a`, 'under-roster');
      await slash.put(`${p}b`, 'under-slash');
      await bare.put(`${p}c`, 'bare');
      expect(await etcd.etcdctl('get', '--print-value-only', `/roster/${p}a`)).toBe('under-roster\n');
      expect(await etcd.etcdctl('get', '--print-value-only', `/${p}b`)).toBe('under-slash\n');
      expect(await etcd.etcdctl('get', '--print-value-only', `${p}c`)).toBe('bare\n');
      // Each backend sees only its own prefix; a root prefix of "/" sees "/roster/..." as "roster/...".
      expect((await rooted.list(p)).items.map((i) => i.key)).toEqual([`${p}a`]);
      expect((await slash.list(`roster/${p}`)).items.map((i) => i.key)).toEqual([`roster/${p}a`]);
      expect((await bare.list(p)).items.map((i) => i.key)).toEqual([`${p}c`]);
      // Session ids are etcd lease ids in hex, as etcdctl prints them.
      const s = await rooted.session({ ttl: 2000 });
      expect(s.ttl).toBe(2000);
      await rooted.put(`${p}eph`, 'x', { session: s });
      expect(await etcd.etcdctl('lease', 'timetolive', s.id, '--keys')).toContain(`/roster/${p}eph`);
      await s.close();
    } finally {
      await rooted.close();
      await slash.close();
      await bare.close();
    }
  });

  it('rounds a TTL up to whole seconds and reports what etcd granted', async () => {
    const b = await EtcdBackend.open(etcd.url('/ttl'));
    try {
      const s = await b.session({ ttl: 1500 });
      expect(s.ttl).toBe(2000);
      await s.close();
    } finally {
      await b.close();
    }
  });

  it('fails over between endpoints: a dead first host does not stop calls', async () => {
    const dead = `127.0.0.1:${await freePort()}`;
    const b = await EtcdBackend.open(`etcd://${dead},${etcd.endpoint}/multi`);
    try {
      const p = uniquePrefix('multi');
      for (let i = 0; i < 10; i++) await b.put(`${p}k${i}`, String(i));
      expect((await b.list(p)).items).toHaveLength(10);
    } finally {
      await b.close();
    }
  });

  it('open() against nothing fails with UNAVAILABLE within dialTimeout', async () => {
    const t0 = Date.now();
    await expect(EtcdBackend.open(`etcd://127.0.0.1:${await freePort()}/`, { dialTimeout: 800 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect(Date.now() - t0).toBeLessThan(3000);
  });

  it('rejects bad options with INVALID_ARGUMENT', async () => {
    await expect(EtcdBackend.open(etcd.url('/'), { tls: { ca: 'x' } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(EtcdBackend.open(etcd.url('/'), { dialTimeout: 'soon' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(EtcdBackend.open(etcd.url('/'), { username: 42 } as never)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(EtcdBackend.open(etcd.url('/'), { password: 'x' })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(EtcdBackend.open(etcd.url('/'), { health: { probeInterval: 'often' } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    await expect(EtcdBackend.open(etcd.url('/'), { health: { probeTimeout: 10 } })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/probeTimeout/) });
    await expect(EtcdBackend.open(etcd.url('/'), { health: { probe: 1000 } } as never)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/probeInterval, probeTimeout/) });
    await expect(EtcdBackend.open(etcd.url('/'), { health: 1000 } as never)).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
    const tuned = await EtcdBackend.open(etcd.url('/'), { health: { probeInterval: '500ms', probeTimeout: 300 } });
    await tuned.close();
  });
});

describe('etcd with authentication', () => {
  let secured: EtcdServer;
  beforeAll(async () => {
    // Tokens expire after 1 s idle, so the expiry path is exercised too.
    secured = await startEtcd({ args: ['--auth-token', 'simple', '--auth-token-ttl', '1'] });
    await secured.etcdctl('user', 'add', 'root:rootpw', '--interactive=false');
    await secured.etcdctl('user', 'grant-role', 'root', 'root');
    await secured.etcdctl('user', 'add', 'app:apppw', '--interactive=false');
    await secured.etcdctl('role', 'add', 'app');
    await secured.etcdctl('role', 'grant-permission', 'app', '--prefix=true', 'readwrite', '/app/');
    await secured.etcdctl('user', 'grant-role', 'app', 'app');
    await secured.etcdctl('auth', 'enable');
    secured.ctlArgs.push('--user=root:rootpw');
  });
  afterAll(async () => {
    await secured?.stop();
  });

  it('username/password (URL or options): keys, sessions and watches work within the granted prefix', async () => {
    const b = await EtcdBackend.open(secured.url('/app'), { username: 'app', password: 'apppw' });
    const viaUrl = await EtcdBackend.open(`etcd://app:apppw@${secured.endpoint}/app`);
    try {
      const p = uniquePrefix('auth');
      const s = await b.session({ ttl: 1000 });
      const w = viaUrl.watch(p);
      const it = w[Symbol.asyncIterator]();
      expect((await it.next()).value).toMatchObject({ type: 'synced' });
      await b.put(`${p}k`, 'v', { session: s });
      expect((await it.next()).value).toMatchObject({ type: 'put', key: `${p}k` });
      expect((await viaUrl.get(`${p}k`))?.value).toBe('v');
      expect(await secured.etcdctl('get', '--print-value-only', `/app/${p}k`)).toBe('v\n');
      await s.close();
      expect((await it.next()).value).toMatchObject({ type: 'delete', key: `${p}k` });
      w.close();
    } finally {
      await b.close();
      await viaUrl.close();
    }
  });

  it('an expired auth token is renewed: new watch streams and unary calls carry on', async () => {
    const b = await EtcdBackend.open(secured.url('/app'), { username: 'app', password: 'apppw' });
    try {
      const p = uniquePrefix('token');
      const s = await b.session({ ttl: 1000 });
      const r0 = await b.put(`${p}a`, '1', { session: s });
      await new Promise((r) => setTimeout(r, 2500)); // idle past the token TTL (what is under test)
      // A resumed watch goes straight to a stream (no unary call first to refresh the token).
      const w = new Reader(b.watch(p, { fromRevision: r0.revision }));
      await secured.etcdctl('put', `/app/${p}b`, 'from-etcdctl');
      expect(await w.next(10_000, 'event over a re-authenticated stream')).toMatchObject({ type: 'put', key: `${p}b` });
      const r = await b.put(`${p}c`, '3');
      expect(await w.next()).toMatchObject({ type: 'put', key: `${p}c`, revision: r.revision });
      expect(s.signal.aborted).toBe(false);
      await w.return();
      await s.close();
    } finally {
      await b.close();
    }
  }, 20_000);

  it('a wrong password or a prefix outside the role fails open() with PERMISSION_DENIED', async () => {
    await expect(EtcdBackend.open(secured.url('/app'), { username: 'app', password: 'nope' })).rejects.toMatchObject({
      code: 'PERMISSION_DENIED',
      message: expect.stringMatching(/authentication failed/),
    });
    await expect(EtcdBackend.open(secured.url('/elsewhere'), { username: 'app', password: 'apppw' })).rejects.toMatchObject({
      code: 'PERMISSION_DENIED',
      message: expect.stringMatching(/permission/),
    });
  });
});

describe('etcd over TLS (etcds://) with client certificates', () => {
  let secure: EtcdServer;
  let tls: TlsFiles;
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'roster-etcd-tls-'));
    tls = { ...(await generateTls(dir)), clientCertAuth: true };
    secure = await startEtcd({ tls });
  });
  afterAll(async () => {
    await secure?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('connects with CA and client cert given as file paths or PEM contents', async () => {
    const byPath = await EtcdBackend.open(secure.url('/tls'), { tls: { ca: tls.ca, cert: tls.clientCert, key: tls.clientKey } });
    const byPem = await EtcdBackend.open(secure.url('/tls'), {
      tls: { ca: readFileSync(tls.ca, 'utf8'), cert: readFileSync(tls.clientCert, 'utf8'), key: readFileSync(tls.clientKey) },
    });
    try {
      expect(byPath.url).toBe(`etcds://${secure.endpoint}/tls/`);
      const p = uniquePrefix('tls');
      const s = await byPath.session({ ttl: 1000 });
      await byPath.put(`${p}k`, 'secret', { session: s });
      expect(await byPem.get(`${p}k`)).toMatchObject({ value: 'secret', session: s.id });
      expect(await secure.etcdctl('get', '--print-value-only', `/tls/${p}k`)).toBe('secret\n');
      await s.close();
    } finally {
      await byPath.close();
      await byPem.close();
    }
  });

  it('without a client certificate the server refuses: UNAVAILABLE within dialTimeout', async () => {
    await expect(EtcdBackend.open(secure.url('/tls'), { tls: { ca: tls.ca }, dialTimeout: 1000 })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
  });
});
