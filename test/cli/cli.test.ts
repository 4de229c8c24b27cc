/**
 * The CLI as a user runs it: real `roster` processes (dist/cli/bin.js, built by `npm test`'s
 * pretest) against a real server. Measures the issue's figures: a watcher sees an interrupted
 * register's delete at once, and a SIGKILLed one's within TTL + 1 s.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFile, rm, stat } from 'node:fs/promises';
import { startInProcess, tempDir, type InProcessServer } from '../helpers/server.js';

const BIN = fileURLToPath(new URL('../../dist/cli/bin.js', import.meta.url));

class Proc {
  readonly child: ChildProcess;
  readonly lines: { line: string; at: number }[] = [];
  stderr = '';
  private waiters: (() => void)[] = [];
  readonly exit: Promise<number | null>;
  constructor(args: string[], env: Record<string, string> = {}) {
    this.child = spawn(process.execPath, [BIN, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      const at = performance.now();
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        this.lines.push({ line: buf.slice(0, i), at });
        buf = buf.slice(i + 1);
      }
      for (const w of this.waiters.splice(0)) w();
    });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr += d.toString()));
    this.exit = new Promise((res) => this.child.on('exit', (code) => res(code)));
  }
  /** Wait for a stdout line matching pred (bounded); returns it with its arrival time. */
  async waitLine(pred: (l: string) => boolean, timeoutMs = 10_000): Promise<{ line: string; at: number }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find((l) => pred(l.line));
      if (hit) return hit;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no matching line within ${timeoutMs} ms; stdout: ${JSON.stringify(this.lines.map((l) => l.line))}; stderr: ${this.stderr}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
  }
}

async function run(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = new Proc(args, env);
  const code = await p.exit;
  return { code, stdout: p.lines.map((l) => l.line).join('\n'), stderr: p.stderr };
}

describe('roster CLI', () => {
  let srv: InProcessServer;
  const procs: Proc[] = [];
  const cli = (...args: string[]) => ['--backend', srv.url, ...args];

  beforeAll(async () => {
    if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` first (npm test does)`);
    srv = await startInProcess();
  });
  afterAll(async () => {
    for (const p of procs) p.child.kill('SIGKILL');
    await srv?.cleanup();
  });

  it('register + watch: put seen, Ctrl-C delete seen at once, kill -9 delete seen within TTL + 1 s', async () => {
    const watch = new Proc(cli('watch', 'orders', '--json'));
    procs.push(watch);
    await watch.waitLine((l) => l.includes('"synced"'));

    const reg1 = new Proc(cli('register', 'orders', '127.0.0.1:9001', '--ttl', '2s', '--meta', 'version=1.4', '--tag', 'blue'));
    procs.push(reg1);
    const put1 = await watch.waitLine((l) => l.includes('"put"') && l.includes('9001'));
    const ev = JSON.parse(put1.line) as { type: string; revision: number; instance: Record<string, unknown> };
    expect(ev.revision).toBeGreaterThan(0);
    expect(ev.instance).toMatchObject({ service: 'orders', id: '127.0.0.1:9001', address: '127.0.0.1', port: 9001, metadata: { version: '1.4' }, tags: ['blue'] });
    await reg1.waitLine((l) => l.startsWith('registered'));

    const t0 = performance.now();
    reg1.child.kill('SIGINT');
    const del1 = await watch.waitLine((l) => l.includes('"delete"') && l.includes('9001'), 5000);
    const gracefulMs = del1.at - t0;
    expect(await reg1.exit).toBe(0);

    const reg2 = new Proc(cli('register', 'orders', '127.0.0.1:9002', '--ttl', '2s'));
    procs.push(reg2);
    await watch.waitLine((l) => l.includes('"put"') && l.includes('9002'));
    await reg2.waitLine((l) => l.startsWith('registered'));
    const t1 = performance.now();
    reg2.child.kill('SIGKILL');
    const del2 = await watch.waitLine((l) => l.includes('"delete"') && l.includes('9002'), 10_000);
    const killMs = del2.at - t1;
    console.log(`[cli] Ctrl-C → watcher sees delete: ${gracefulMs.toFixed(1)} ms; kill -9 → watcher sees delete: ${killMs.toFixed(0)} ms (TTL 2000 ms)`);
    expect(gracefulMs).toBeLessThan(500);
    expect(killMs).toBeLessThan(3000);
    // Revisions in the NDJSON stream only go up.
    const revs = watch.lines.map((l) => (JSON.parse(l.line) as { revision: number }).revision);
    expect(revs).toEqual([...revs].sort((a, b) => a - b));
    watch.child.kill('SIGINT');
    expect(await watch.exit).toBe(0);
  }, 30_000);

  it('ls lists services and instances, as text and JSON', async () => {
    const reg = new Proc(cli('register', 'billing', '10.1.2.3:80', '--id', 'b1', '--ttl', '5s', '--zone', 'eu-1', '--weight', '3'));
    procs.push(reg);
    await reg.waitLine((l) => l.startsWith('registered'));
    const services = await run(cli('ls', '--json'));
    expect(services.code).toBe(0);
    expect(JSON.parse(services.stdout)).toContainEqual({ service: 'billing', instances: 1 });
    const inst = await run(cli('ls', 'billing', '--json'));
    expect(JSON.parse(inst.stdout)).toEqual([
      expect.objectContaining({ service: 'billing', id: 'b1', address: '10.1.2.3', port: 80, metadata: {}, zone: 'eu-1', weight: 3 }),
    ]);
    const text = await run(cli('ls', 'billing'));
    expect(text.stdout).toContain('billing/b1  10.1.2.3:80  zone=eu-1  weight=3');
    const pick = await run(cli('pick', 'billing', '-n', '2'));
    expect(pick.stdout.split('\n')).toEqual(['10.1.2.3:80', '10.1.2.3:80']);
    reg.child.kill('SIGTERM');
    expect(await reg.exit).toBe(0);
    expect(JSON.parse((await run(cli('ls', 'billing', '--json'))).stdout)).toEqual([]);
  }, 30_000);

  it('kv put/get/ls/del round trip, with compare-and-set', async () => {
    expect((await run(cli('kv', 'put', 'cfg/a', 'one'))).stdout).toMatch(/^OK revision=\d+ version=1$/);
    expect((await run(cli('kv', 'get', 'cfg/a'))).stdout).toBe('one');
    const cas = await run(cli('kv', 'put', 'cfg/a', 'two', '--if-version', '7'));
    expect(cas.code).toBe(1);
    expect(cas.stderr).toMatch(/CONFLICT/);
    expect((await run(cli('kv', 'put', 'cfg/a', 'two', '--if-version', '1'))).code).toBe(0);
    expect((await run(cli('kv', 'ls', 'cfg/'))).stdout).toBe('cfg/a\ttwo');
    expect((await run(cli('kv', 'del', 'cfg/a'))).code).toBe(0);
    const gone = await run(cli('kv', 'get', 'cfg/a'));
    expect(gone.code).toBe(1);
    expect(gone.stderr).toMatch(/not found/);
  }, 30_000);

  it('errors: one clear line on stderr and a non-zero exit', async () => {
    const cases: [string[], number, RegExp][] = [
      [cli('ls', 'bad name!'), 1, /invalid service name/],
      [cli('register', 'orders', 'not a host'), 1, /invalid address/],
      [cli('register', 'orders', '127.0.0.1:99999'), 1, /invalid port/],
      [cli('register', 'orders', '127.0.0.1:1', '--ttl', '-5s'), 1, /invalid ttl/],
      [cli('register', 'orders', '127.0.0.1:1', '--ttl', 'soon'), 1, /invalid ttl/],
      [cli('register', 'orders', '127.0.0.1:1', '--meta', 'novalue'), 1, /expected key=value/],
      [cli('kv', 'put', 'a//b', 'x'), 1, /invalid key/],
      [cli('pick', 'orders', '--strategy', 'consistent-hash'), 1, /needs --key/],
      [['--backend', 'http://127.0.0.1:1', 'ls'], 1, /UNAVAILABLE/],
      [['--backend', 'ftp://x', 'ls'], 1, /unsupported backend URL/],
      [['no-such-command'], 2, /unknown command/],
    ];
    for (const [args, code, re] of cases) {
      const r = await run(args);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(code);
      expect(r.stderr, args.join(' ')).toMatch(re);
      if (code === 1) expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
    }
  }, 60_000);

  it('roster server: auth on by default (bootstrap token in the data dir, 0600), serves, stops gracefully on SIGTERM, and keeps acknowledged data across a restart', async () => {
    const dataDir = await tempDir('roster-cli-srv');
    const tokenFile = `${dataDir}/admin.token`;
    try {
      const start = async () => {
        const p = new Proc(['server', '--port', '0', '--data-dir', dataDir]);
        procs.push(p);
        const line = (await p.waitLine((l) => l.includes('listening on'))).line;
        const auth = (await p.waitLine((l) => l.startsWith('auth is'))).line;
        return { p, url: /listening on (http:\/\/\S+)/.exec(line)![1]!, auth };
      };
      const first = await start();
      expect(first.auth).toContain(`a new bootstrap admin token is in ${tokenFile}`);
      expect((await stat(tokenFile)).mode & 0o777).toBe(0o600);
      const health = await fetch(`${first.url}/healthz`);
      expect(health.status).toBe(200);
      const anonymous = await run(['--backend', first.url, 'kv', 'put', 'kept/a', 'yes']);
      expect(anonymous.code).toBe(1);
      expect(anonymous.stderr).toMatch(/authentication required.*\[UNAUTHENTICATED\]/);
      expect((await run(['--backend', first.url, '--token-file', tokenFile, 'kv', 'put', 'kept/a', 'yes'])).code).toBe(0);
      first.p.child.kill('SIGTERM');
      expect(await first.p.exit).toBe(0);
      const token = (await readFile(tokenFile, 'utf8')).trim();
      const second = await start();
      expect(second.auth).toContain(`the bootstrap admin token is in ${tokenFile}`); // not made again
      expect((await readFile(tokenFile, 'utf8')).trim()).toBe(token);
      expect((await run(['--backend', second.url, 'kv', 'get', 'kept/a'], { ROSTER_TOKEN: token })).stdout).toBe('yes');
      second.p.child.kill('SIGINT');
      expect(await second.p.exit).toBe(0);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 30_000);

  it('reads ROSTER_BACKEND when --backend is absent', async () => {
    await run(cli('kv', 'put', 'envtest', 'yes'));
    const r = await run(['kv', 'get', 'envtest'], { ROSTER_BACKEND: srv.url });
    expect(r.stdout).toBe('yes');
  });
});
