/**
 * The CLI as a user runs it: real `roster` processes (dist/cli/bin.js) against a real server.
 * Measures the figures: a watcher sees an interrupted register's deregistration at once
 * (DELETE) and a SIGKILLed one's expiry within TTL + 1 s (EXPIRE).
 */
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInProcess, tempDir, type InProcessServer } from '../helpers/server.js';
import { CliSession, Proc, requireBuilt, run } from '../helpers/cli.js';

describe('roster CLI', () => {
  let srv: InProcessServer;
  const session = new CliSession(() => srv.url);
  const procs = session.procs;
  const cli = (...args: string[]) => session.args(...args);
  const spawnCli = (...args: string[]) => session.spawn(...args);

  beforeAll(async () => {
    requireBuilt();
    srv = await startInProcess();
  });
  afterAll(async () => {
    session.killAll();
    await srv?.cleanup();
  });

  it('register + watch: ADD seen, Ctrl-C is a DELETE seen at once, kill -9 an EXPIRE within TTL + 1 s; lines carry the time', async () => {
    const watch = spawnCli('watch', 'orders', '--json');
    await watch.waitLine((l) => l.includes('"synced"'));

    const reg1 = spawnCli('register', 'orders', '127.0.0.1:9001', '--ttl', '2s', '--meta', 'version=1.4', '--tag', 'blue');
    const add1 = await watch.waitLine((l) => l.includes('"add"') && l.includes('9001'));
    const ev = JSON.parse(add1.line) as { time: string; type: string; revision: number; instance: Record<string, unknown> };
    expect(Date.now() - Date.parse(ev.time)).toBeLessThan(10_000);
    expect(ev.revision).toBeGreaterThan(0);
    expect(ev.instance).toMatchObject({ service: 'orders', id: '127.0.0.1:9001', address: '127.0.0.1', port: 9001, metadata: { version: '1.4' }, tags: ['blue'] });
    await reg1.waitLine((l) => l.startsWith('registered'));

    const t0 = performance.now();
    reg1.child.kill('SIGINT');
    const del1 = await watch.waitLine((l) => l.includes('"delete"') && l.includes('9001'), 5000);
    const gracefulMs = del1.at - t0;
    expect(await reg1.exit).toBe(0);
    expect(reg1.stdout).toContain('deregistered orders/127.0.0.1:9001');

    const reg2 = spawnCli('register', 'orders', '127.0.0.1:9002', '--ttl', '2s');
    await watch.waitLine((l) => l.includes('"add"') && l.includes('9002'));
    await reg2.waitLine((l) => l.startsWith('registered'));
    const t1 = performance.now();
    reg2.child.kill('SIGKILL');
    const exp2 = await watch.waitLine((l) => l.includes('"expire"') && l.includes('9002'), 10_000);
    const killMs = exp2.at - t1;
    console.log(`[cli] Ctrl-C → watcher sees DELETE: ${gracefulMs.toFixed(1)} ms; kill -9 → watcher sees EXPIRE: ${killMs.toFixed(0)} ms (TTL 2000 ms)`);
    expect(gracefulMs).toBeLessThan(500);
    expect(killMs).toBeLessThan(3000);
    // The deregistration's leaving mark is not an UPDATE; nothing else was printed for 9001.
    const types = watch.json<{ type: string; instance?: { id: string } }>().filter((e) => e.instance?.id === '127.0.0.1:9001').map((e) => e.type);
    expect(types).toEqual(['add', 'delete']);
    const revs = watch.json<{ revision: number }>().map((e) => e.revision);
    expect(revs).toEqual([...revs].sort((a, b) => a - b));
    watch.child.kill('SIGINT');
    expect(await watch.exit).toBe(0);
  }, 30_000);

  it('watch text lines: time, ADD / UPDATE (what changed) / DELETE; filters narrow what is shown', async () => {
    const watch = spawnCli('watch', 'pay', '--tag', 'blue');
    await watch.waitLine((l) => /SYNCED {2}0 instance\(s\)/.test(l));
    const blue = spawnCli('register', 'pay', '127.0.0.1:7001', '--tag', 'blue', '--ttl', '5s');
    const red = spawnCli('register', 'pay', '127.0.0.1:7002', '--tag', 'red', '--ttl', '5s');
    const add = await watch.waitLine((l) => l.includes('ADD') && l.includes('7001'));
    expect(add.line).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z {2}ADD {5}pay\/127\.0\.0\.1:7001 {2}127\.0\.0\.1:7001 {2}tags=blue$/);
    await red.waitLine((l) => l.startsWith('registered'));
    // Re-registering the same id with another weight is an update.
    blue.child.kill('SIGINT');
    await watch.waitLine((l) => l.includes('DELETE') && l.includes('7001'));
    const blue2 = spawnCli('register', 'pay', '127.0.0.1:7001', '--tag', 'blue', '--ttl', '5s', '--weight', '3');
    await watch.waitLine((l) => l.includes('ADD') && l.includes('weight=3'));
    expect(watch.stdout).not.toContain('7002');
    for (const p of [red, blue2]) p.child.kill('SIGINT');
    watch.child.kill('SIGINT');
    expect(await watch.exit).toBe(0);
  }, 30_000);

  it('ls: header with HEALTH, AGE and TTL; -o wide; --json; filters; nothing found is exit 4', async () => {
    const reg = spawnCli('register', 'billing', '10.1.2.3:80', '--id', 'b1', '--ttl', '5s', '--zone', 'eu-1', '--weight', '3', '--tag', 'green', '--meta', 'v=2', '--json');
    const registered = JSON.parse((await reg.waitLine((l) => l.includes('"registered"'))).line) as { key: string; ttl: number };
    expect(registered).toMatchObject({ registered: true, key: 'services/billing/b1', ttl: 5000 });
    const services = await run(cli('ls', '--json'));
    expect(services.code).toBe(0);
    expect(JSON.parse(services.stdout)).toContainEqual({ service: 'billing', instances: 1, skipped: 0 });
    const table = await run(cli('ls', 'billing'));
    const [head, row] = table.stdout.split('\n');
    expect(head).toMatch(/^ID +ADDRESS +HEALTH +STATUS +AGE +TTL$/);
    expect(row).toMatch(/^b1 +10\.1\.2\.3:80 +- +up +\d+s +5s$/);
    const wide = await run(cli('ls', 'billing', '-o', 'wide'));
    expect(wide.stdout.split('\n')[0]).toMatch(/ZONE +WEIGHT +TAGS +METADATA +SESSION$/);
    expect(wide.stdout.split('\n')[1]).toMatch(/eu-1 +3 +green +v=2 +\S+$/);
    const inst = await run(cli('ls', 'billing', '--json'));
    expect(JSON.parse(inst.stdout)).toEqual([
      expect.objectContaining({ service: 'billing', id: 'b1', address: '10.1.2.3', port: 80, zone: 'eu-1', weight: 3, sessionTtl: 5000, registeredAt: expect.any(Number), session: expect.any(String) }),
    ]);
    expect((await run(cli('ls', 'billing', '--tag', 'green', '--meta', 'v=2', '--health', 'passing'))).code).toBe(0);
    const none = await run(cli('ls', 'billing', '--tag', 'red'));
    expect(none.code).toBe(4);
    expect(none.stderr).toMatch(/none of the 1 instance\(s\) of service "billing" matches the filters/);
    const missing = await run(cli('ls', 'nosuchservice'));
    expect(missing.code).toBe(4);
    expect(missing.stdout).toBe('');
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    const pick = await run(cli('pick', 'billing', '-n', '2'));
    expect(pick.stdout.split('\n')).toEqual(['10.1.2.3:80', '10.1.2.3:80']);
    expect(JSON.parse((await run(cli('pick', 'billing', '-o', 'json'))).stdout)).toEqual([{ id: 'b1', endpoint: '10.1.2.3:80' }]);
    expect((await run(cli('pick', 'billing', '--tag', 'red'))).code).toBe(4);
    reg.child.kill('SIGTERM');
    expect(await reg.exit).toBe(0);
    expect(JSON.parse(reg.lines.at(-1)!.line)).toEqual({ deregistered: true, service: 'billing', id: 'b1' });
    const gone = await run(cli('ls', 'billing', '--json'));
    expect(gone.code).toBe(4);
    expect(JSON.parse(gone.stdout)).toEqual([]);
  }, 30_000);

  it('ls counts decoded instances: a parent key is not one, an undecodable entry is skipped and said', async () => {
    const reg = spawnCli('register', 'mixed', '127.0.0.1:6001', '--ttl', '5s');
    await reg.waitLine((l) => l.startsWith('registered'));
    expect((await run(cli('kv', 'put', 'services/mixed', ''))).code).toBe(0); // Curator-style parent node
    expect((await run(cli('kv', 'put', 'services/mixed/broken', 'not json'))).code).toBe(0);
    const r = await run(cli('ls'));
    expect(r.stdout).toMatch(/^SERVICE +INSTANCES +SKIPPED$/m);
    expect(r.stdout).toMatch(/^mixed +1 +1$/m);
    expect(r.stderr).toMatch(/skipping services\/mixed\/broken: malformed instance/);
    const api = (await (await fetch(`${srv.url}/api/v1/services`)).json()) as { services: { name: string; instances: number; skipped?: number }[] };
    expect(api.services.find((s) => s.name === 'mixed')).toEqual({ name: 'mixed', instances: 1, skipped: 1 });
    await run(cli('kv', 'del', 'services/mixed'));
    await run(cli('kv', 'del', 'services/mixed/broken'));
    reg.child.kill('SIGINT');
    await reg.exit;
  }, 30_000);

  it('kv: put/get/--prefix/ls/del, stdin with -, --ttl expiry, compare-and-set (exit 5), missing key (exit 4)', async () => {
    expect((await run(cli('kv', 'put', 'cfg/a', 'one'))).stdout).toMatch(/^OK revision=\d+ version=1$/);
    expect((await run(cli('kv', 'get', 'cfg/a'))).stdout).toBe('one');
    expect((await run(cli('kv', 'put', 'cfg/b', '-'), { stdin: '{"limit": 10}\nline two' })).code).toBe(0);
    expect((await run(cli('kv', 'get', 'cfg/b'))).stdout).toBe('{"limit": 10}\nline two');
    const cas = await run(cli('kv', 'put', 'cfg/a', 'two', '--if-version', '7'));
    expect(cas.code).toBe(5);
    expect(cas.stderr).toMatch(/CONFLICT/);
    expect((await run(cli('kv', 'put', 'cfg/a', 'two', '--if-absent'))).code).toBe(5);
    expect((await run(cli('kv', 'put', 'cfg/a', 'two', '--if-version', '1'))).code).toBe(0);
    expect((await run(cli('kv', 'get', 'cfg/', '--prefix'))).stdout).toBe('cfg/a\ttwo\ncfg/b\t"{\\"limit\\": 10}\\nline two"');
    expect((await run(cli('kv', 'ls', 'cfg/'))).stdout.split('\n')[0]).toBe('cfg/a\ttwo');
    // 3 s: the next command must start and answer before the key expires, also on a loaded machine.
    const ttl = await run(cli('kv', 'put', 'cfg/tmp', 'x', '--ttl', '3s'));
    expect(ttl.stdout).toMatch(/expires 3s after this command/);
    expect((await run(cli('kv', 'get', 'cfg/tmp'))).stdout).toBe('x');
    const deadline = Date.now() + 8000;
    while ((await run(cli('kv', 'get', 'cfg/tmp'))).code !== 4) expect(Date.now()).toBeLessThan(deadline);
    expect((await run(cli('kv', 'del', 'cfg/a'))).code).toBe(0);
    const gone = await run(cli('kv', 'get', 'cfg/a'));
    expect(gone.code).toBe(4);
    expect(gone.stderr).toMatch(/not found/);
    expect((await run(cli('kv', 'del', 'cfg/', '--prefix'))).stdout).toMatch(/^OK deleted=1 /);
    expect((await run(cli('kv', 'get', 'cfg/', '--prefix'))).code).toBe(4);
  }, 60_000);

  it('usage errors: one line with a hint and exit 2; durations need units; the address needs host and port', async () => {
    const cases: [string[], RegExp][] = [
      [cli('ls', 'bad name!'), /invalid service name/],
      [cli('register', 'orders', 'not a host'), /invalid address/],
      [cli('register', 'orders', ':9000'), /the host is missing/],
      [cli('register', 'orders', '127.0.0.1'), /the port is missing/],
      [cli('register', 'orders', '127.0.0.1:99999'), /port/],
      [cli('register', 'orders', '127.0.0.1:1', '--ttl', '-5s'), /invalid --ttl/],
      [cli('register', 'orders', '127.0.0.1:1', '--ttl', 'soon'), /invalid --ttl/],
      [cli('register', 'orders', '127.0.0.1:1', '--ttl', '2'), /a duration needs a unit: 2s, 2ms or 2m/],
      [cli('lock', 'x', '--timeout', '30', '--', 'true'), /invalid --timeout "30": a duration needs a unit/],
      [cli('register', 'orders', '127.0.0.1:1', '--meta', 'novalue'), /expected key=value/],
      [cli('register', 'orders', '127.0.0.1:1', '--interval', '5s'), /need a check/],
      [cli('kv', 'put', 'a//b', 'x'), /invalid key/],
      [cli('pick', 'orders', '--strategy', 'consistent-hash'), /needs --key/],
      [cli('ls', '-o', 'yaml'), /yaml/],
      [cli('ls', '--health', 'ok'), /invalid --health "ok"/],
      [['--backend', 'ftp://x', 'ls'], /unsupported backend URL/],
      [['--backend', 'not a url', 'ls'], /invalid --backend/],
      [['no-such-command'], /unknown command 'no-such-command'/],
      [['ls', '--bogus'], /unknown option '--bogus'/],
      [['elect', 'x'], /needs a value/],
    ];
    const results = await Promise.all(cases.map(([args]) => run(args)));
    results.forEach((r, i) => {
      const [args, re] = cases[i]!;
      const what = args.join(' ');
      expect(r.code, `${what}: ${r.stderr}`).toBe(2);
      expect(r.stderr, what).toMatch(re);
      expect(r.stderr.trim().split('\n'), what).toHaveLength(1);
      expect(r.stderr, what).toMatch(/\(see roster( [a-z]+)* --help\)\n$/);
      expect(r.stderr, what).not.toMatch(/roster: roster/);
    });
    expect(results[8]!.stderr).toContain('(see roster lock --help)');
  }, 60_000);

  it('--version, a scheme-less host:port backend, and 1m30s durations', async () => {
    const v = await run(['--version']);
    expect(v.code).toBe(0);
    expect(v.stdout).toMatch(/^roster \d+\.\d+\.\d+ \(roster-sd, node v\d+/);
    const host = new URL(srv.url).host;
    expect((await run(['-b', host, 'kv', 'put', 'schemeless', 'yes'])).code).toBe(0);
    const lk = await run(['-b', host, 'lock', 'dur', '--ttl', '1m30s', '--timeout', '1m', '--', process.execPath, '-e', 'process.exit(0)']);
    expect(lk.code, lk.stderr).toBe(0);
  }, 30_000);

  it('flags from ROSTER_* and a config file: flag > env > config file > default', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'roster-cfg-'));
    try {
      const file = join(dir, 'roster.json');
      await writeFile(file, JSON.stringify({ backend: srv.url, kv: { put: { 'if-absent': true } }, register: { ttl: '3s', tag: ['fromfile'] } }));
      // The config file gives the backend and --if-absent.
      expect((await run(['--config', file, 'kv', 'put', 'precedence', 'one'])).code).toBe(0);
      expect((await run(['--config', file, 'kv', 'put', 'precedence', 'two'])).code).toBe(5);
      // The environment beats the file (ROSTER_KV_PUT_IF_ABSENT=false), the flag beats the environment.
      expect((await run(['kv', 'put', 'precedence', 'two'], { env: { ROSTER_CONFIG: file, ROSTER_KV_PUT_IF_ABSENT: 'false' } })).code).toBe(0);
      expect((await run(['kv', 'put', 'precedence', 'three', '--if-absent'], { env: { ROSTER_CONFIG: file, ROSTER_KV_PUT_IF_ABSENT: 'false' } })).code).toBe(5);
      // ROSTER_BACKEND beats the file's backend; the flag beats ROSTER_BACKEND.
      expect((await run(['kv', 'get', 'precedence'], { env: { ROSTER_CONFIG: file, ROSTER_BACKEND: 'http://127.0.0.1:9' } })).code).toBe(3);
      expect((await run(['-b', srv.url, 'kv', 'get', 'precedence'], { env: { ROSTER_CONFIG: file, ROSTER_BACKEND: 'http://127.0.0.1:9' } })).stdout).toBe('two');
      // Command flags from the file and env: ttl and tag for register.
      const reg = new Proc(['register', 'cfgsvc', '127.0.0.1:5001'], { env: { ROSTER_CONFIG: file, ROSTER_REGISTER_TAG: '["fromenv","second"]' } });
      procs.push(reg);
      await reg.waitLine((l) => l.startsWith('registered'));
      expect(reg.stdout).toContain('(ttl 3s)');
      const inst = JSON.parse((await run(cli('ls', 'cfgsvc', '--json'))).stdout) as { tags: string[] }[];
      expect(inst[0]!.tags).toEqual(['fromenv', 'second']);
      reg.child.kill('SIGINT');
      await reg.exit;
      // A typo in the file is an error naming it, not a silent default.
      await writeFile(file, JSON.stringify({ backend: srv.url, regster: { ttl: '3s' } }));
      const typo = await run(['--config', file, 'ls']);
      expect(typo.code).toBe(2);
      expect(typo.stderr).toMatch(/unknown key "regster"/);
      const badEnv = await run(cli('kv', 'put', 'x', 'y'), { env: { ROSTER_KV_PUT_IF_ABSENT: 'maybe' } });
      expect(badEnv.code).toBe(2);
      expect(badEnv.stderr).toMatch(/\$ROSTER_KV_PUT_IF_ABSENT "maybe": expected true or false/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 30_000);

  it('deregister: the owning register process does not put it back, says so and exits 0; a later registration is unaffected', async () => {
    const reg = spawnCli('register', 'ops', '127.0.0.1:4001', '--ttl', '5s');
    await reg.waitLine((l) => l.startsWith('registered'));
    const watch = spawnCli('watch', 'ops', '--json');
    await watch.waitLine((l) => l.includes('"synced"'));
    const d = await run(cli('deregister', 'ops', '127.0.0.1:4001'));
    expect(d.code, d.stderr).toBe(0);
    expect(d.stdout).toMatch(/^deregistered ops\/127\.0\.0\.1:4001 \(127\.0\.0\.1:4001\); its registrar \(session \w+\) will not put it back$/);
    expect(await reg.exit).toBe(0);
    expect(reg.stderr).toMatch(/deregistered by an operator \(roster deregister\): not re-registering; exiting/);
    await watch.waitLine((l) => l.includes('"delete"'));
    expect((await run(cli('ls', 'ops'))).code).toBe(4);
    expect((await run(cli('deregister', 'ops', '127.0.0.1:4001'))).code).toBe(4);
    // The same id registered again by a new process stays registered (the intent named the old session).
    const again = spawnCli('register', 'ops', '127.0.0.1:4001', '--ttl', '5s');
    await again.waitLine((l) => l.startsWith('registered'));
    // A plain delete of its key (not a deregistration) is repaired.
    await run(cli('kv', 'del', 'services/ops/127.0.0.1:4001'));
    await again.waitStderr(/was deleted: put back/);
    expect((await run(cli('ls', 'ops'))).code).toBe(0);
    const types = watch.json<{ type: string }>().map((e) => e.type);
    expect(types).toEqual(['add', 'synced', 'delete', 'add', 'expire', 'add']);
    again.child.kill('SIGINT');
    await again.exit;
    watch.child.kill('SIGINT');
  }, 30_000);

  it('register --drain registers in maintenance; pick uses it only when nothing else is up', async () => {
    const up = spawnCli('register', 'maint', '127.0.0.1:3001', '--ttl', '5s');
    const drained = spawnCli('register', 'maint', '127.0.0.1:3002', '--ttl', '5s', '--drain');
    await up.waitLine((l) => l.startsWith('registered'));
    await drained.waitLine((l) => l.startsWith('registered') && l.includes('draining'));
    expect((await run(cli('ls', 'maint'))).stdout).toMatch(/127\.0\.0\.1:3002 +127\.0\.0\.1:3002 +- +draining/);
    expect(new Set((await run(cli('pick', 'maint', '-n', '6'))).stdout.split('\n'))).toEqual(new Set(['127.0.0.1:3001']));
    up.child.kill('SIGINT');
    await up.exit;
    expect((await run(cli('pick', 'maint'))).stdout).toBe('127.0.0.1:3002');
    drained.child.kill('SIGINT');
    await drained.exit;
  }, 30_000);

  it('lock: checks the command before waiting, says who holds the lock while waiting, --timeout is exit 7', async () => {
    const holder = spawnCli('lock', 'job', '--', process.execPath, '-e', 'setInterval(() => {}, 1000)');
    await holder.waitStderr(/acquired lock job \(fencing token \d+\)/);
    // A missing command fails at once (127), without waiting for the held lock.
    const missing = await run(cli('lock', 'job', '--', './no-such-job.sh'));
    expect(missing.code).toBe(127);
    expect(missing.stderr).toBe('roster: cannot run ./no-such-job.sh: not found\n');
    expect(missing.ms).toBeLessThan(3000);
    const plain = join(await mkdtemp(join(tmpdir(), 'roster-lock-')), 'plain.txt');
    await writeFile(plain, 'not a program', { mode: 0o644 });
    const notExec = await run(cli('lock', 'job', '--', plain));
    expect(notExec.code).toBe(126);
    // A waiter says who holds it, then gives up after --timeout.
    const waiter = await run(cli('lock', 'job', '--timeout', '1s', '--', 'true'));
    expect(waiter.code).toBe(7);
    expect(waiter.stderr).toMatch(/waiting for lock job: held by [^ ]+:\d+ \(fencing token \d+\)/);
    expect(waiter.stderr).toMatch(/not acquired within 1s \(--timeout\)/);
    const next = spawnCli('lock', 'job', '--', process.execPath, '-e', 'process.exit(3)');
    await next.waitStderr(/waiting for lock job: held by/);
    holder.child.kill('SIGINT');
    expect(await holder.exit).toBe(143); // its command was stopped with SIGTERM: 128 + 15
    expect(holder.stderr).toMatch(/interrupted: stopping the command/);
    expect(await next.exit).toBe(3);
  }, 30_000);

  it('elect: --observe prints VACANT and each LEADER; a waiting candidate names the leader', async () => {
    const obs = spawnCli('elect', '--observe', 'sched');
    await obs.waitLine((l) => /VACANT {2}no leader of sched$/.test(l));
    const a = spawnCli('elect', 'sched', 'alpha', '--ttl', '2s');
    await a.waitLine((l) => l.startsWith('elected: sched = alpha'));
    await obs.waitLine((l) => /LEADER {2}alpha \(key elections\/sched\/\w+, term \d+\)$/.test(l));
    const b = spawnCli('elect', 'sched', 'beta', '--ttl', '2s');
    await b.waitStderr(/waiting for election sched: leader is alpha \(term \d+\)/);
    a.child.kill('SIGINT');
    expect(await a.exit).toBe(0);
    await b.waitLine((l) => l.startsWith('elected: sched = beta'));
    await obs.waitLine((l) => l.includes('LEADER  beta'));
    b.child.kill('SIGINT');
    expect(await b.exit).toBe(0);
    await obs.waitLine((l) => l.includes('VACANT') && obs.lines.indexOf(obs.lines.find((x) => x.line === l)!) > 0);
    obs.child.kill('SIGINT');
    expect(await obs.exit).toBe(0);
  }, 30_000);

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
      expect(anonymous.code).toBe(8);
      expect(anonymous.stderr).toMatch(/authentication required.*\[UNAUTHENTICATED\]/);
      expect((await run(['--backend', first.url, '--token-file', tokenFile, 'kv', 'put', 'kept/a', 'yes'])).code).toBe(0);
      first.p.child.kill('SIGTERM');
      expect(await first.p.exit).toBe(0);
      const token = (await readFile(tokenFile, 'utf8')).trim();
      const second = await start();
      expect(second.auth).toContain(`the bootstrap admin token is in ${tokenFile}`); // not made again
      expect((await readFile(tokenFile, 'utf8')).trim()).toBe(token);
      expect((await run(['--backend', second.url, 'kv', 'get', 'kept/a'], { env: { ROSTER_TOKEN: token } })).stdout).toBe('yes');
      second.p.child.kill('SIGINT');
      expect(await second.p.exit).toBe(0);
    } finally {
      await rm(dataDir, { recursive: true, force: true });
    }
  }, 30_000);
});
