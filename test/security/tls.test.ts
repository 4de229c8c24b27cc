/**
 * TLS with certificates generated here by openssl (two unrelated CAs): the server over https, the
 * remote backend and the CLI trusting the right CA and refusing the wrong one; mutual TLS refusing a
 * client without a certificate or with one from the wrong CA; the CLI's etcd flags against a real
 * etcd that requires client certificates; `roster server` refusing to listen beyond loopback without
 * auth and TLS, and starting (and warning on every start) with --insecure.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/backend.js';
import { Engine } from '../../src/engine/engine.js';
import { launchServer, type RosterServer } from '../../src/server/server.js';
import { generateTls, startEtcd, type EtcdServer, type TlsFiles } from '../helpers/etcd.js';
import { BOOTSTRAP } from './helpers.js';

const BIN = fileURLToPath(new URL('../../dist/cli/bin.js', import.meta.url));

function run(args: string[], env: Record<string, string> = {}, untilLine?: RegExp): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      if (untilLine && untilLine.test(stdout)) c.kill('SIGTERM');
    });
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const t = setTimeout(() => c.kill('SIGKILL'), 20_000);
    c.once('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout, stderr });
    });
  });
}

describe('TLS: right and wrong CA, mutual TLS', () => {
  let dir: string;
  let right: TlsFiles;
  let wrong: TlsFiles;
  let pem: Record<'ca' | 'cert' | 'key' | 'clientCert' | 'clientKey' | 'wrongCa' | 'wrongCert' | 'wrongKey', Buffer>;
  const engines: Engine[] = [];
  const servers: RosterServer[] = [];
  const start = async (mtls: boolean) => {
    const engine = await Engine.open();
    engines.push(engine);
    const s = await launchServer({ port: 0, engine, tls: { cert: pem.cert, key: pem.key, ...(mtls ? { clientCa: pem.ca } : {}) }, auth: { bootstrapToken: BOOTSTRAP, audit: false } });
    servers.push(s);
    return s;
  };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'roster-tls-'));
    await Promise.all([rm(join(dir, 'a'), { force: true }), rm(join(dir, 'b'), { force: true })]);
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(dir, 'a'));
    await mkdir(join(dir, 'b'));
    [right, wrong] = await Promise.all([generateTls(join(dir, 'a')), generateTls(join(dir, 'b'))]);
    const r = (p: string) => readFile(p);
    pem = {
      ca: await r(right.ca),
      cert: await r(right.serverCert),
      key: await r(right.serverKey),
      clientCert: await r(right.clientCert),
      clientKey: await r(right.clientKey),
      wrongCa: await r(wrong.ca),
      wrongCert: await r(wrong.clientCert),
      wrongKey: await r(wrong.clientKey),
    };
  }, 60_000);
  afterAll(async () => {
    for (const s of servers) await s.close();
    for (const e of engines) await e.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('https: the right CA works end to end (token, put, watch); the wrong CA and the system CAs are refused', async () => {
    const s = await start(false);
    expect(s.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const ok = await RemoteBackend.open(s.url, { token: BOOTSTRAP, tls: { ca: pem.ca }, keepProcessAlive: false });
    await ok.put('tls/a', '1');
    const w = ok.watch('tls/');
    const it = w[Symbol.asyncIterator]();
    expect((await it.next()).value).toMatchObject({ type: 'put', key: 'tls/a' });
    await ok.put('tls/b', '2');
    expect((await it.next()).value).toMatchObject({ type: 'synced' });
    expect((await it.next()).value).toMatchObject({ type: 'put', key: 'tls/b' });
    await it.return?.();
    await ok.close();
    for (const tls of [{ ca: pem.wrongCa }, undefined]) {
      const bad = await RemoteBackend.open(s.url, { token: BOOTSTRAP, ...(tls ? { tls } : {}), keepProcessAlive: false });
      const err = await bad.get('tls/a').catch((e: unknown) => e);
      expect(err).toMatchObject({ code: 'UNAVAILABLE' });
      expect(String((err as Error).message)).toMatch(/SELF_SIGNED|UNABLE_TO_VERIFY|certificate/i);
      bad.destroy();
    }
    // Plain http to the https port gets nothing useful.
    const plain = await RemoteBackend.open(s.url.replace('https:', 'http:'), { token: BOOTSTRAP, keepProcessAlive: false });
    await expect(plain.get('tls/a')).rejects.toBeTruthy();
    plain.destroy();
  });

  it('mutual TLS: a client certificate from the right CA is served; none, or one from the wrong CA, is refused', async () => {
    const s = await start(true);
    const good = await RemoteBackend.open(s.url, { token: BOOTSTRAP, tls: { ca: pem.ca, cert: pem.clientCert, key: pem.clientKey }, keepProcessAlive: false });
    await good.put('mtls/a', '1');
    expect((await good.get('mtls/a'))?.value).toBe('1');
    await good.close();
    for (const tls of [{ ca: pem.ca }, { ca: pem.ca, cert: pem.wrongCert, key: pem.wrongKey }]) {
      const bad = await RemoteBackend.open(s.url, { token: BOOTSTRAP, tls, keepProcessAlive: false });
      await expect(bad.get('mtls/a')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
      bad.destroy();
    }
  });

  it('the CLI: --tls-ca right works, wrong fails with one line; --tls-cert/--tls-key for mutual TLS', async () => {
    const s = await start(true);
    const base = ['--backend', s.url, '--token', BOOTSTRAP];
    const good = await run([...base, '--tls-ca', right.ca, '--tls-cert', right.clientCert, '--tls-key', right.clientKey, 'kv', 'put', 'cli/a', 'yes']);
    expect(good.code, good.stderr).toBe(0);
    const wrongCa = await run([...base, '--tls-ca', wrong.ca, '--tls-cert', right.clientCert, '--tls-key', right.clientKey, 'kv', 'get', 'cli/a']);
    expect(wrongCa.code).toBe(3);
    expect(wrongCa.stderr.trim().split('\n')).toHaveLength(1);
    expect(wrongCa.stderr).toMatch(/UNAVAILABLE/);
    const noCert = await run([...base, '--tls-ca', right.ca, 'kv', 'get', 'cli/a']);
    expect(noCert.code).toBe(3);
    // From the environment, as a service's unit file would set them.
    const env = await run(['--backend', s.url, 'kv', 'get', 'cli/a'], { ROSTER_TOKEN: BOOTSTRAP, ROSTER_TLS_CA: right.ca, ROSTER_TLS_CERT: right.clientCert, ROSTER_TLS_KEY: right.clientKey });
    expect(env.stdout.trim()).toBe('yes');
    // A TLS flag for a plain http:// URL is a usage mistake, said in one line.
    const mismatch = await run(['--backend', 'http://127.0.0.1:1', '--tls-ca', right.ca, 'kv', 'get', 'x']);
    expect(mismatch.code).toBe(2);
    expect(mismatch.stderr).toMatch(/--tls-ca does not apply to http:\/\/127\.0\.0\.1:1: TLS needs an https:\/\/ URL/);
  }, 60_000);

  it('`roster server --tls-cert --tls-key [--tls-client-ca]` serves https', async () => {
    const data = await mkdtemp(join(tmpdir(), 'roster-tls-srv-'));
    try {
      const r = await run(['server', '--port', '0', '--data-dir', data, '--tls-cert', right.serverCert, '--tls-key', right.serverKey, '--tls-client-ca', right.ca], {}, /auth is on/);
      expect(r.stdout).toMatch(/listening on https:\/\/127\.0\.0\.1:\d+/);
    } finally {
      await rm(data, { recursive: true, force: true });
    }
  }, 30_000);

  it('beyond loopback: refused without auth and TLS; with both it starts; --insecure starts and warns', async () => {
    const data = await mkdtemp(join(tmpdir(), 'roster-wide-'));
    try {
      const noTls = await run(['server', '--host', '0.0.0.0', '--port', '0', '--data-dir', data]);
      expect(noTls.code).toBe(2);
      expect(noTls.stderr).toMatch(/refusing to listen on 0\.0\.0\.0 without TLS/);
      expect(noTls.stdout).toBe('');
      const noAuth = await run(['server', '--host', '0.0.0.0', '--port', '0', '--data-dir', data, '--auth', 'off', '--tls-cert', right.serverCert, '--tls-key', right.serverKey]);
      expect(noAuth.code).toBe(2);
      expect(noAuth.stderr).toMatch(/refusing to listen on 0\.0\.0\.0 without auth/);
      const both = await run(['server', '--host', '0.0.0.0', '--port', '0', '--data-dir', data, '--tls-cert', right.serverCert, '--tls-key', right.serverKey], {}, /auth is on/);
      expect(both.stdout).toMatch(/listening on https:\/\/0\.0\.0\.0:\d+/);
      expect(both.stderr).not.toMatch(/WARNING/);
      for (let i = 0; i < 2; i++) {
        const insecure = await run(['server', '--host', '0.0.0.0', '--port', '0', '--data-dir', data, '--auth', 'off', '--insecure'], {}, /listening on/);
        expect(insecure.stderr).toMatch(/WARNING: listening on 0\.0\.0\.0 without auth and TLS \(--insecure\)/);
      }
    } finally {
      await rm(data, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('the CLI against etcd with TLS and client certificates', () => {
  let dir: string;
  let tls: TlsFiles;
  let wrong: TlsFiles;
  let etcd: EtcdServer | undefined;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'roster-etcd-cli-tls-'));
    const { mkdir } = await import('node:fs/promises');
    await mkdir(join(dir, 'a'));
    await mkdir(join(dir, 'b'));
    tls = { ...(await generateTls(join(dir, 'a'))), clientCertAuth: true };
    wrong = await generateTls(join(dir, 'b'));
    etcd = await startEtcd({ tls });
  }, 60_000);
  afterAll(async () => {
    await etcd?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('--tls-ca/--tls-cert/--tls-key reach an etcds:// cluster; the wrong CA is refused in one line', async () => {
    const url = etcd!.url('/cli');
    const good = await run(['--backend', url, '--tls-ca', tls.ca, '--tls-cert', tls.clientCert, '--tls-key', tls.clientKey, 'kv', 'put', 'a', 'yes']);
    expect(good.code, good.stderr).toBe(0);
    const read = await run(['--backend', url, 'kv', 'get', 'a'], { ROSTER_TLS_CA: tls.ca, ROSTER_TLS_CERT: tls.clientCert, ROSTER_TLS_KEY: tls.clientKey });
    expect(read.stdout.trim()).toBe('yes');
    const bad = await run(['--backend', url, '--tls-ca', wrong.ca, '--tls-cert', tls.clientCert, '--tls-key', tls.clientKey, 'kv', 'get', 'a']);
    expect(bad.code).toBe(3);
    // (Node prints a deprecation warning of its own for etcd3's IP servername; roster says one line.)
    expect(bad.stderr.split('\n').filter((l) => l.startsWith('roster:'))).toHaveLength(1);
    expect(bad.stderr).toMatch(/roster: .*UNAVAILABLE/);
    const token = await run(['--backend', url, '--token', 'x'.repeat(40), 'kv', 'get', 'a']);
    expect(token.code).toBe(2);
    expect(token.stderr).toMatch(/--token does not apply to etcds:.*user and password in the URL/);
  }, 60_000);
});
