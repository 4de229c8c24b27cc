/**
 * `roster server` flags map onto the server: DNS (`--dns [host:port] --dns-domain --dns-ttl`, read
 * with dig), the Consul API (`--node-name --datacenter --node-address`, `--no-consul`), checks
 * (`--no-checks`), and the same flags from ROSTER_SERVER_* and the config file.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Proc, requireBuilt, run } from '../helpers/cli.js';

const exec = promisify(execFile);

describe('roster server flags', () => {
  let dir: string;
  const procs: Proc[] = [];
  beforeAll(async () => {
    requireBuilt();
    dir = await mkdtemp(join(tmpdir(), 'roster-srvflags-'));
  });
  afterAll(async () => {
    for (const p of procs) p.child.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  const start = async (args: string[], env: Record<string, string> = {}) => {
    const p = new Proc(['server', ...args], { env });
    procs.push(p);
    const line = (await p.waitLine((l) => l.includes('listening on'), 20_000)).line;
    return { p, line, url: /listening on (http:\/\/\S+?)\s/.exec(line)![1]! };
  };

  it.runIf(existsSync('/usr/bin/dig'))('--dns (from the config file) with --dns-domain and --dns-ttl: dig resolves a CLI registration', async () => {
    const cfg = join(dir, 'server.json');
    await writeFile(cfg, JSON.stringify({ server: { port: 0, 'data-dir': join(dir, 'dns'), auth: 'off', dns: '127.0.0.1:0', 'dns-domain': 'test', 'dns-ttl': '7s' } }));
    const s = await start([], { ROSTER_CONFIG: cfg });
    const m = /dns on 127\.0\.0\.1:(\d+) \(domain test, ttl 7s\)/.exec(s.line);
    expect(m, s.line).not.toBeNull();
    const reg = new Proc(['-b', s.url, 'register', 'orders', '127.0.0.1:9301']);
    procs.push(reg);
    await reg.waitLine((l) => l.startsWith('registered'));
    const { stdout } = await exec('dig', ['@127.0.0.1', '-p', m![1]!, '+tries=1', '+time=3', '+noall', '+answer', 'orders.service.test', 'SRV'], { timeout: 20_000 });
    expect(stdout).toMatch(/^orders\.service\.test\.\s+7\s+IN\s+SRV\s+\d+ \d+ 9301 /m);
    reg.child.kill('SIGINT');
    await reg.exit;
    s.p.child.kill('SIGTERM');
    expect(await s.p.exit).toBe(0);
  }, 40_000);

  it('--node-name / --datacenter (from ROSTER_SERVER_*) reach /v1/agent/self; --no-consul turns /v1 off; bad flags are exit 2', async () => {
    const a = await start(['--port', '0', '--data-dir', join(dir, 'a')], { ROSTER_SERVER_NODE_NAME: 'node-7', ROSTER_SERVER_DATACENTER: 'dc9', ROSTER_SERVER_CHECK_CONCURRENCY: '4' });
    // Auth is on by default: the bootstrap token the server wrote, as a Consul client sends it.
    const token = (await readFile(join(dir, 'a', 'admin.token'), 'utf8')).trim();
    const self = (await (await fetch(`${a.url}/v1/agent/self`, { headers: { 'x-consul-token': token } })).json()) as { Config: { NodeName: string; Datacenter: string } };
    expect(self.Config).toMatchObject({ NodeName: 'node-7', Datacenter: 'dc9' });
    a.p.child.kill('SIGTERM');
    await a.p.exit;
    const b = await start(['--port', '0', '--data-dir', join(dir, 'b'), '--auth', 'off', '--no-consul', '--no-checks', '--max-body', '2KiB']);
    expect((await fetch(`${b.url}/v1/agent/self`)).status).toBe(404);
    const big = await fetch(`${b.url}/api/v1/keys/too-big`, { method: 'PUT', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ value: 'x'.repeat(3000) }) });
    expect(big.status).toBe(413);
    expect((await fetch(`${b.url}/healthz`)).status).toBe(200);
    b.p.child.kill('SIGTERM');
    await b.p.exit;
    for (const args of [['--port', '70000'], ['--dns', 'nohostport:99999'], ['--dns-ttl', '5'], ['--check-concurrency', '0'], ['--compact-bytes', 'lots']]) {
      const r = await run(['server', '--port', '0', '--data-dir', join(dir, 'bad'), ...args]);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expect(r.stderr.trim().split('\n'), args.join(' ')).toHaveLength(1);
    }
  }, 40_000);
});
