/**
 * Long-running commands ride out a server that is killed (kill -9) and restarted: `register` ends
 * registered again, `watch` and `kv watch` go on and print what changed after the restart, a
 * waiting `lock` still gets the lock and runs its command, `elect --observe` goes on; each says on
 * stderr that it lost and regained the backend. With `--give-up-after`, an outage that lasts
 * exits 3 with one line.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess } from '../helpers/server.js';
import { Proc, requireBuilt, run } from '../helpers/cli.js';

describe('roster CLI across kill -9 and restart of the server', () => {
  let srv: ServerProcess;
  const procs: Proc[] = [];
  const cli = (...args: string[]) => {
    const p = new Proc(['--backend', srv.url, ...args]);
    procs.push(p);
    return p;
  };

  beforeAll(async () => {
    requireBuilt();
    srv = await ServerProcess.start();
  });
  afterEach(() => {
    for (const p of procs.splice(0)) p.child.kill('SIGKILL');
  });
  afterAll(async () => {
    await srv?.cleanup();
  });

  it('register, watch, kv watch, a waiting lock and elect --observe keep going; the instance is registered again', async () => {
    const reg = cli('register', 'orders', '127.0.0.1:9101', '--ttl', '2s');
    await reg.waitLine((l) => l.startsWith('registered'));
    const watch = cli('watch', 'orders', '--json');
    await watch.waitLine((l) => l.includes('"synced"'));
    const kvw = cli('kv', 'watch', 'cfg/', '--json');
    await kvw.waitLine((l) => l.includes('"synced"'));
    const obs = cli('elect', '--observe', 'leader');
    await obs.waitLine((l) => l.includes('VACANT'));
    const holder = cli('lock', 'job', '--ttl', '30s', '--', process.execPath, '-e', 'process.on("SIGTERM", () => process.exit(0)); setInterval(() => {}, 1000)');
    await holder.waitStderr(/acquired lock job/);
    const waiter = cli('lock', 'job', '--ttl', '30s', '--', process.execPath, '-e', 'console.log("waiter ran with token " + process.env.ROSTER_FENCING_TOKEN)');
    await waiter.waitStderr(/waiting for lock job: held by/);

    // Down for longer than the registration's 2 s TTL: its session is lost and must be replaced.
    await srv.kill('SIGKILL');
    await reg.waitStderr(/lost http:\/\/127\.0\.0\.1:\d+ \(registration of orders\/127\.0\.0\.1:9101 lost; re-registering\)/, 15_000);
    await srv.start();

    await reg.waitStderr(/regained http:\/\/127\.0\.0\.1:\d+ after \S+ \(orders\/127\.0\.0\.1:9101 registered again\)/, 15_000);
    const ls = await run(['--backend', srv.url, 'ls', 'orders', '--json']);
    expect(ls.code, ls.stderr).toBe(0);
    expect(JSON.parse(ls.stdout)).toEqual([expect.objectContaining({ id: '127.0.0.1:9101' })]);

    // Changes after the restart reach the watchers: the watches are complete, not stopped.
    const second = cli('register', 'orders', '127.0.0.1:9102', '--ttl', '5s');
    await second.waitLine((l) => l.startsWith('registered'));
    await watch.waitLine((l) => l.includes('"add"') && l.includes('9102'), 15_000);
    expect((await run(['--backend', srv.url, 'kv', 'put', 'cfg/after', 'restart'])).code).toBe(0);
    await kvw.waitLine((l) => l.includes('"put"') && l.includes('cfg/after'), 15_000);
    const cand = cli('elect', 'leader', 'after-restart');
    await cand.waitLine((l) => l.startsWith('elected'), 15_000);
    await obs.waitLine((l) => l.includes('LEADER  after-restart'), 15_000);

    // The waiting lock rode out the outage: released by its holder, it runs its command.
    holder.child.kill('SIGINT');
    await waiter.waitLine((l) => /^waiter ran with token \d+$/.test(l), 15_000);
    expect(await waiter.exit).toBe(0);

    for (const p of [watch, kvw, obs]) {
      await p.waitStderr(/lost http:\/\/127\.0\.0\.1:\d+ \(/, 1000);
      await p.waitStderr(/regained http:\/\/127\.0\.0\.1:\d+ after /, 1000);
    }
    await waiter.waitStderr(/regained/, 1000);
    // The watch saw the instance expire with its old session, then come back: never a silent gap.
    const events = watch.json<{ type: string; instance?: { id: string } }>().filter((e) => e.instance?.id === '127.0.0.1:9101').map((e) => e.type);
    expect(events[0]).toBe('add');
    expect(events[events.length - 1]).toBe('add');
    console.log(`[outage] watch events for 9101: ${events.join(', ')}; register stderr: ${reg.stderr.trim().split('\n').join(' | ')}`);

    for (const p of [reg, second, watch, kvw, obs, cand]) p.child.kill('SIGINT');
    for (const p of [reg, second, watch, kvw, obs, cand]) expect(await p.exit).toBe(0);
  }, 90_000);

  it('--give-up-after: an outage that lasts ends register and watch with exit 3 and one line', async () => {
    const reg = cli('register', 'giveup', '127.0.0.1:9201', '--ttl', '1s', '--give-up-after', '2s');
    await reg.waitLine((l) => l.startsWith('registered'));
    const watch = cli('watch', 'giveup', '--give-up-after', '2s');
    await watch.waitLine((l) => l.includes('SYNCED'));
    await srv.kill('SIGKILL');
    const t0 = performance.now();
    try {
      const [rw, rr] = await Promise.all([watch.exit, reg.exit]);
      const ms = performance.now() - t0;
      expect(rw).toBe(3);
      expect(rr).toBe(3);
      for (const p of [watch, reg]) {
        const lines = p.stderr.trim().split('\n');
        expect(lines[0]).toMatch(/^roster: lost http:\/\/127\.0\.0\.1:\d+ \(.*\): .*; retrying for up to 2s \(--give-up-after\)$/);
        expect(lines.at(-1)).toMatch(/^roster: http:\/\/127\.0\.0\.1:\d+ unreachable for 2s: giving up \(--give-up-after\).*\[UNAVAILABLE\]$/);
      }
      // The watch goes stale at once; the registration is lost after its 1 s TTL.
      expect(ms).toBeLessThan(1000 + 2000 + 4000);
    } finally {
      await srv.start();
    }
  }, 60_000);
});
