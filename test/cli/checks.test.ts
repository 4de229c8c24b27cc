/**
 * Health checks from the command line (issue 14's CLI part): `register --check-http / --check-tcp /
 * --check-ttl`, the HEALTH column of `ls`, health in `watch` lines, `--health passing` on `ls`,
 * `watch` and `pick`, `--deregister-after`, and the refusal on a backend that runs no checks.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInProcess, type InProcessServer } from '../helpers/server.js';
import { CliSession, requireBuilt, run } from '../helpers/cli.js';

describe('roster register --check-*', () => {
  let srv: InProcessServer;
  let target: Server;
  let healthy = true;
  let targetUrl = '';
  let seenHeader: string | undefined;
  let seenMethod: string | undefined;
  const session = new CliSession(() => srv.url);
  const cli = (...args: string[]) => session.args(...args);
  const spawnCli = (...args: string[]) => session.spawn(...args);

  beforeAll(async () => {
    requireBuilt();
    srv = await startInProcess();
    target = createServer((req, res) => {
      seenHeader = req.headers['x-probe'] as string | undefined;
      seenMethod = req.method;
      res.statusCode = healthy ? 200 : 500;
      res.end(healthy ? 'ok' : 'down');
    });
    await new Promise<void>((r) => target.listen(0, '127.0.0.1', r));
    targetUrl = `http://127.0.0.1:${(target.address() as AddressInfo).port}/health`;
  });
  afterAll(async () => {
    session.killAll();
    await new Promise((r) => target.close(r));
    await srv?.cleanup();
  });

  const health = async (service: string) => {
    const r = await run(cli('ls', service, '--json'));
    return (JSON.parse(r.stdout || '[]') as { health?: string }[]).map((i) => i.health);
  };

  it('--check-http: passing, then critical when the endpoint fails; ls / watch / pick follow it', async () => {
    const watch = spawnCli('watch', 'web');
    await watch.waitLine((l) => l.includes('SYNCED'));
    const passingOnly = spawnCli('watch', 'web', '--health', 'passing', '--json');
    await passingOnly.waitLine((l) => l.includes('"synced"'));
    const reg = spawnCli('register', 'web', '127.0.0.1:8101', '--check-http', targetUrl, '--interval', '1s', '--timeout', '500ms', '--check-method', 'HEAD', '--check-header', 'X-Probe: roster');
    const line = (await reg.waitLine((l) => l.startsWith('registered'))).line;
    expect(line).toContain('check service:127.0.0.1:8101');
    // A fresh registration with checks starts critical until the first probe (Consul's rule).
    await watch.waitLine((l) => / {2}UPDATE {2}web\/127\.0\.0\.1:8101 .*health=passing .*\(health critical→passing\)$/.test(l), 10_000);
    expect(seenMethod).toBe('HEAD');
    expect(seenHeader).toBe('roster');
    expect(await health('web')).toEqual(['passing']);
    expect((await run(cli('ls', 'web'))).stdout).toMatch(/^127\.0\.0\.1:8101 +127\.0\.0\.1:8101 +passing +up /m);
    await passingOnly.waitLine((l) => l.includes('"add"'), 5000);
    expect((await run(cli('pick', 'web', '--health', 'passing'))).stdout).toBe('127.0.0.1:8101');

    healthy = false;
    await watch.waitLine((l) => /UPDATE {2}web\/127\.0\.0\.1:8101 .*health=critical .*\(health passing→critical\)$/.test(l), 10_000);
    expect(await health('web')).toEqual(['critical']);
    const none = await run(cli('ls', 'web', '--health', 'passing'));
    expect(none.code).toBe(4);
    expect((await run(cli('pick', 'web', '--health', 'passing'))).code).toBe(4);
    // Leaving the filtered view is shown as such, not as a deregistration.
    await passingOnly.waitLine((l) => l.includes('"delete"') && l.includes('no longer matches the filters'), 5000);
    healthy = true;
    await watch.waitLine((l) => l.includes('(health critical→passing)') && watch.lines.filter((x) => x.line.includes('critical→passing')).length === 2, 10_000);
    for (const p of [reg, watch, passingOnly]) p.child.kill('SIGINT');
    expect(await reg.exit).toBe(0);
  }, 40_000);

  it('--check-ttl: this process passes it about every TTL/2; killed with SIGSTOP, the instance turns critical', async () => {
    const reg = spawnCli('register', 'beat', '127.0.0.1:8201', '--check-ttl', '2s', '--ttl', '30s');
    await reg.waitLine((l) => l.startsWith('registered'));
    const deadline = Date.now() + 5000;
    while ((await health('beat'))[0] !== 'passing') expect(Date.now()).toBeLessThan(deadline);
    // Passing holds over several TTLs: the heartbeat runs.
    await new Promise((r) => setTimeout(r, 4500));
    expect(await health('beat')).toEqual(['passing']);
    const checks = (await (await fetch(`${srv.url}/api/v1/checks/${encodeURIComponent('service:127.0.0.1:8201')}`)).json()) as { checks: { status: string }[] };
    expect(checks.checks.map((c) => c.status)).toEqual(['passing']);
    // Paused (no heartbeat, but its 30 s session lives on): critical within the 2 s TTL.
    reg.child.kill('SIGSTOP');
    const t0 = Date.now();
    while ((await health('beat'))[0] !== 'critical') expect(Date.now() - t0).toBeLessThan(6000);
    reg.child.kill('SIGCONT');
    const t1 = Date.now();
    while ((await health('beat'))[0] !== 'passing') expect(Date.now() - t1).toBeLessThan(6000);
    reg.child.kill('SIGINT');
    expect(await reg.exit).toBe(0);
  }, 40_000);

  it('--check-tcp with --deregister-after: critical that long, the process deregisters and exits 1', async () => {
    // Nothing listens on the port: the TCP check fails.
    const reg = spawnCli('register', 'tcpsvc', '127.0.0.1:8301', '--check-tcp', '127.0.0.1:9', '--interval', '1s', '--deregister-after', '2s');
    await reg.waitLine((l) => l.startsWith('registered'));
    expect(await reg.exit).toBe(1);
    expect(reg.stderr).toMatch(/tcpsvc\/127\.0\.0\.1:8301 critical for 2s \(--deregister-after\): deregistering/);
    expect((await run(cli('ls', 'tcpsvc'))).code).toBe(4);
  }, 30_000);

  it('checks are refused on backends that run none, and malformed check flags are usage errors', async () => {
    const cases: [string[], RegExp][] = [
      [['-b', 'etcd://127.0.0.1:9', 'register', 'x', '127.0.0.1:1', '--check-ttl', '5s'], /health checks .* run in the roster server: etcd:\/\/127\.0\.0\.1:9 is not one/],
      [['-b', 'zk://127.0.0.1:9', 'register', 'x', '127.0.0.1:1', '--check-http', 'http://x/'], /run in the roster server/],
      [cli('register', 'x', '127.0.0.1:1', '--check-http', 'ftp://x/'), /expected an http:\/\/ or https:\/\/ URL/],
      [cli('register', 'x', '127.0.0.1:1', '--check-tcp', 'nohost'), /--check-tcp/],
      [cli('register', 'x', '127.0.0.1:1', '--check-ttl', '5s', '--interval', '1s'), /--check-ttl takes no --interval/],
      [cli('register', 'x', '127.0.0.1:1', '--check-http', 'http://x/', '--check-ttl', '5s'), /give one check/],
      [cli('register', 'x', '127.0.0.1:1', '--check-http', 'http://x/', '--interval', '100ms'), /--interval/],
      [cli('register', 'x', '127.0.0.1:1', '--check-tcp', '127.0.0.1:1', '--check-method', 'GET'), /--check-method is for --check-http/],
    ];
    const results = await Promise.all(cases.map(([a]) => run(a)));
    results.forEach((r, i) => {
      expect(r.code, r.stderr).toBe(2);
      expect(r.stderr).toMatch(cases[i]![1]);
      expect(r.stderr.trim().split('\n')).toHaveLength(1);
    });
  }, 30_000);
});
