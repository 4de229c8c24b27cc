/**
 * Auth as an operator runs it, with real `roster` processes: the bootstrap token (generated into the
 * data dir, or given by environment; rotated by giving another; a revoked one is not made again),
 * `roster token create|ls|revoke|whoami` and `roster acl policy set|ls|get|rm`, a register-only token
 * registering its service and refused another, and the audit log recording who changed what.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

const BIN = fileURLToPath(new URL('../../dist/cli/bin.js', import.meta.url));
const live: ChildProcess[] = [];
afterAll(() => {
  for (const c of live) c.kill('SIGKILL');
});

function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    c.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const t = setTimeout(() => c.kill('SIGKILL'), 30_000);
    c.once('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stdout: stdout.trim(), stderr: stderr.trim() });
    });
  });
}

/** A long-running command; resolves once a stdout line matches. */
function start(args: string[], ready: RegExp, env: Record<string, string> = {}): Promise<{ proc: ChildProcess; out: () => string; exit: Promise<number | null> }> {
  return new Promise((resolve, reject) => {
    const proc = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    live.push(proc);
    let out = '';
    let err = '';
    const exit = new Promise<number | null>((r) => proc.once('exit', r));
    const t = setTimeout(() => reject(new Error(`not ready: ${out} ${err}`)), 20_000);
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => {
      out += d;
      if (ready.test(out)) {
        clearTimeout(t);
        resolve({ proc, out: () => out, exit });
      }
    });
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
    void exit.then((code) => {
      clearTimeout(t);
      reject(new Error(`exited ${code}: ${out} ${err}`));
    });
  });
}

async function server(dataDir: string, env: Record<string, string> = {}) {
  const s = await start(['server', '--port', '0', '--data-dir', dataDir], /auth is[^\n]*\n/, env);
  const url = /listening on (http:\/\/\S+)/.exec(s.out())![1]!;
  return { url, line: s.out().split('\n').find((l) => l.startsWith('auth is'))!, stop: async () => (s.proc.kill('SIGTERM'), await s.exit) };
}

describe('bootstrap token', () => {
  it('given by the environment: no file is written; another one given later replaces it; a revoked generated one is not made again', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'roster-boot-'));
    try {
      const first = 'first-bootstrap-token-aaaaaaaaaaaaaaaaaaaaa';
      const second = 'second-bootstrap-token-bbbbbbbbbbbbbbbbbbbb';
      let s = await server(dir, { ROSTER_BOOTSTRAP_TOKEN: first });
      expect(existsSync(join(dir, 'admin.token'))).toBe(false);
      expect((await run(['--backend', s.url, '--token', first, 'token', 'whoami'])).stdout).toMatch(/^bootstrap\tbootstrap\tadmin/);
      await s.stop();
      s = await server(dir, { ROSTER_BOOTSTRAP_TOKEN: second });
      const old = await run(['--backend', s.url, '--token', first, 'token', 'ls']);
      expect(old.code).toBe(8);
      expect(old.stderr).toMatch(/token not accepted.*\[UNAUTHENTICATED\]/);
      expect((await run(['--backend', s.url, '--token', second, 'token', 'ls'])).code).toBe(0);
      await s.stop();
      const short = await run(['server', '--port', '0', '--data-dir', dir], { ROSTER_BOOTSTRAP_TOKEN: 'short' });
      expect(short.code).toBe(2);
      expect(short.stderr).toMatch(/invalid bootstrap token: expected 32-512 printable ASCII characters/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  it('generated: written 0600 and printed; revoked, it is not made again on the next start', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'roster-boot2-'));
    try {
      let s = await server(dir);
      const file = join(dir, 'admin.token');
      expect(s.line).toBe(`auth is on: a new bootstrap admin token is in ${file} (roster --token-file ${file} ...)`);
      expect((await stat(file)).mode & 0o777).toBe(0o600);
      const boot = (await readFile(file, 'utf8')).trim();
      expect(boot).toMatch(/^roster\.bootstrap\.[A-Za-z0-9_-]{43}$/);
      const created = await run(['--backend', s.url, '--token-file', file, 'token', 'create', '--name', 'ops', '--admin']);
      expect(created.code, created.stderr).toBe(0);
      const ops = created.stdout;
      expect((await run(['--backend', s.url, '--token', ops, 'token', 'revoke', 'bootstrap'])).stdout).toBe('OK revoked bootstrap');
      await s.stop();
      s = await server(dir);
      expect(s.line).toMatch(/auth is on: the bootstrap token was revoked/);
      expect((await run(['--backend', s.url, '--token', boot, 'token', 'ls'])).code).toBe(8);
      expect((await run(['--backend', s.url, '--token', ops, 'token', 'ls'])).code).toBe(0);
      await s.stop();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);
});

describe('roster token and roster acl', () => {
  it('an operator makes a policy and a service token; the service registers itself and nothing else; the audit log says who did what', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'roster-acl-cli-'));
    try {
      const s = await server(dir);
      const admin = ['--backend', s.url, '--token-file', join(dir, 'admin.token')];
      const set = await run([...admin, 'acl', 'policy', 'set', 'orders', '--rule', 'service:orders=register', '--rule', 'service:*=read', '--description', 'the orders service']);
      expect(set.stdout).toBe('OK policy orders: service:orders=register service:*=read');
      expect((await run([...admin, 'acl', 'policy', 'ls'])).stdout).toBe('orders\tservice:orders=register service:*=read\tthe orders service');
      expect(JSON.parse((await run([...admin, 'acl', 'policy', 'get', 'orders'])).stdout)).toMatchObject({ name: 'orders', rules: [{ service: 'orders', access: 'register' }, { service: '*', access: 'read' }] });
      const bad = await run([...admin, 'acl', 'policy', 'set', 'x', '--rule', 'keys:a=read']);
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/invalid --rule "keys:a=read"/);

      const created = await run([...admin, 'token', 'create', '--name', 'orders-prod', '--policy', 'orders']);
      expect(created.code, created.stderr).toBe(0);
      const token = created.stdout;
      expect(token).toMatch(/^roster\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]{43}$/);
      expect(created.stderr).toMatch(/created token (\S+) \(orders-prod; policies orders\); it is shown only now/);
      const accessor = token.split('.')[1]!;
      const ls = await run([...admin, 'token', 'ls']);
      expect(ls.stdout).toContain(`${accessor}\torders-prod\torders\t`);
      expect(ls.stdout).not.toContain(token.split('.')[2]!); // never the secret

      const svc = { ROSTER_BACKEND: s.url, ROSTER_TOKEN: token };
      expect((await run(['token', 'whoami'], svc)).stdout).toMatch(new RegExp(`^${accessor}\torders-prod\torders`));
      const reg = await start(['register', 'orders', '127.0.0.1:9001', '--ttl', '10s'], /registered orders\//, svc);
      expect((await run(['ls', 'orders'], svc)).stdout).toMatch(/^127\.0\.0\.1:9001\s+127\.0\.0\.1:9001/m);
      const other = await run(['register', 'payments', '127.0.0.1:9002', '--ttl', '10s'], svc);
      expect(other.code).toBe(8);
      expect(other.stderr).toMatch(/may not write "services\/payments\/.*\[PERMISSION_DENIED\]/);
      const notAdmin = await run(['token', 'ls'], svc);
      expect(notAdmin.code).toBe(8);
      expect(notAdmin.stderr).toMatch(/admin token required.*\[PERMISSION_DENIED\]/);
      reg.proc.kill('SIGINT');
      expect(await reg.exit).toBe(0);

      const inUse = await run([...admin, 'acl', 'policy', 'rm', 'orders']);
      expect(inUse.code).toBe(5);
      expect(inUse.stderr).toMatch(/is used by 1 token\(s\).*\[CONFLICT\]/);
      const revoked = await run([...admin, 'token', 'revoke', accessor]);
      expect(revoked.stdout, revoked.stderr).toBe(`OK revoked ${accessor}`);
      expect((await run(['ls', 'orders'], svc)).code).toBe(8);
      expect((await run([...admin, 'acl', 'policy', 'rm', 'orders'])).stdout).toBe('OK deleted policy orders');
      await s.stop();

      const lines = (await readFile(join(dir, 'audit.log'), 'utf8')).trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>);
      expect((await stat(join(dir, 'audit.log'))).mode & 0o777).toBe(0o600);
      const find = (pred: (e: Record<string, unknown>) => boolean) => lines.find(pred);
      expect(find((e) => e.method === 'POST' && e.path === '/api/v1/acl/tokens' && e.status === 201 && e.token === 'bootstrap')).toBeDefined();
      expect(find((e) => e.method === 'PUT' && e.path === '/api/v1/acl/policies/orders' && e.token === 'bootstrap')).toBeDefined();
      expect(find((e) => e.method === 'PUT' && String(e.path).startsWith('/api/v1/keys/services/orders/') && e.token === accessor && e.tokenName === 'orders-prod' && e.status === 200)).toBeDefined();
      expect(find((e) => String(e.path).includes('payments') && e.token === accessor && e.status === 403 && e.code === 'PERMISSION_DENIED')).toBeDefined();
      expect(find((e) => e.method === 'DELETE' && e.path === `/api/v1/acl/tokens/${accessor}` && e.status === 200)).toBeDefined();
      expect(find((e) => e.status === 401 && e.token === '')).toBeDefined(); // the revoked token's last try
      for (const e of lines) expect(Object.keys(e).sort()).toEqual(expect.arrayContaining(['addr', 'method', 'path', 'route', 'status', 'token', 'tokenName', 'ts']));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 90_000);
});
