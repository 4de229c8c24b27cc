/**
 * The recipes on a real etcd (test/helpers/etcd.ts), plus interop with etcd's own tools: roster's
 * Election and lock use Go's client/v3/concurrency key layout (`<name>/<lease id hex>`) when given
 * the bare name as prefix on a backend without root prefix, so `etcdctl elect` / `etcdctl lock`
 * (which are that Go code) take part in the same election or contend for the same lock.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Backend } from '../../src/contract/types.js';
import { EtcdBackend } from '../../src/backends/etcd/index.js';
import { Election, lock, observeLeaders, tryLock, type Leader } from '../../src/recipes/index.js';
import { ETCDCTL_BIN, startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { eventually, Reader } from '../helpers/watch.js';
import { recipesSuite } from './suite.js';

let etcd: EtcdServer;
beforeAll(async () => {
  etcd = await startEtcd();
}, 60_000);
afterAll(async () => {
  await etcd?.stop();
});

describe('recipes on etcd://', () => {
  recipesSuite(() => ({ open: () => EtcdBackend.open(etcd.url('/recipes')), ttl: 1000 }));
});

const running = new Set<Ctl>();

/** A long-running etcdctl whose stdout lines we follow. Killed after each test if still running. */
class Ctl {
  readonly proc: ChildProcess;
  readonly lines: string[] = [];
  stderr = '';
  readonly exited: Promise<number | null>;
  constructor(args: string[]) {
    this.proc = spawn(ETCDCTL_BIN, [`--endpoints=${etcd.endpoint}`, ...etcd.ctlArgs, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ETCDCTL_API: '3' } });
    let buf = '';
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (d: string) => {
      buf += d;
      const parts = buf.split('\n');
      buf = parts.pop()!;
      this.lines.push(...parts);
    });
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (d: string) => (this.stderr += d));
    this.exited = new Promise((r) => this.proc.once('exit', (code) => r(code)));
    running.add(this);
    void this.exited.then(() => running.delete(this));
  }
  async stop(sig: NodeJS.Signals = 'SIGINT'): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(sig);
    await this.exited;
  }
}

describe('interop with etcdctl (Go concurrency package)', () => {
  let b: Backend;
  const uniq = (n: string) => `${n}-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`;
  beforeAll(async () => {
    b = await EtcdBackend.open(etcd.url('')); // no root prefix: roster keys are raw etcd keys
  });
  afterAll(async () => {
    await b?.close();
  });
  afterEach(async () => {
    await Promise.all([...running].map((c) => c.stop('SIGKILL')));
  });

  it('`etcdctl elect --listen` sees roster\'s leader, and roster observes an `etcdctl elect` leader', async () => {
    const name = uniq('interop-elect');
    const s = await b.session({ ttl: 1000 });
    const mine = new Election(b, s, name, { prefix: `${name}/` });
    await mine.campaign('from-roster', { signal: AbortSignal.timeout(10_000) });
    const listener = new Ctl(['elect', '--listen', name]);
    await eventually(() => listener.lines.includes('from-roster'), 10_000, `etcdctl elect --listen output (got ${JSON.stringify(listener.lines)} ${listener.stderr})`);
    expect(listener.lines).toContain(mine.key); // the key etcdctl reports is roster's key
    expect(mine.key).toBe(`${name}/${s.id}`);

    // etcdctl campaigns behind roster; roster resigns; etcdctl becomes leader and roster sees it.
    const leaders = new Reader<Leader>(observeLeaders(b, `${name}/`));
    expect((await leaders.next(5000)).value).toBe('from-roster');
    const candidate = new Ctl(['elect', name, 'from-etcdctl']);
    await eventually(async () => (await b.list(`${name}/`)).items.length === 2, 10_000, `etcdctl campaigning (${candidate.stderr})`);
    await mine.resign();
    const next = await leaders.next(10_000, 'etcdctl leader');
    expect(next.value).toBe('from-etcdctl');
    expect(next.key).toMatch(new RegExp(`^${name}/[0-9a-f]+$`));
    await eventually(() => listener.lines.includes('from-etcdctl'), 10_000, 'listener sees etcdctl leader');
    // And roster waits behind etcdctl's leader until it goes.
    // etcdctl resigns on SIGINT; its session TTL is 60 s, so a missed resign would stall here.
    const again = mine.campaign('roster-again', { signal: AbortSignal.timeout(15_000) });
    await candidate.stop('SIGINT');
    await again;
    expect(await leaders.next(10_000, 'roster again')).toMatchObject({ value: 'roster-again', key: mine.key });
    await leaders.return();
    await listener.stop();
    await mine.resign();
    await s.close();
  }, 60_000);

  it('`etcdctl lock` and roster contend for the same lock', async () => {
    const name = uniq('interop-lock');
    const s = await b.session({ ttl: 1000 });
    const held = await lock(b, s, name, { prefix: name });
    expect(held.key).toBe(`${name}/${s.id}`);
    const ctl = new Ctl(['lock', name, 'echo', 'etcdctl-got-it']);
    await eventually(async () => (await b.list(`${name}/`)).items.length === 2, 10_000, `etcdctl waiting (${ctl.stderr})`);
    expect(ctl.lines).not.toContain('etcdctl-got-it');
    await held.unlock();
    expect(await ctl.exited).toBe(0);
    expect(ctl.lines).toContain('etcdctl-got-it');

    // etcdctl holding (no command: holds until interrupted) → roster's tryLock fails, then succeeds.
    const holder = new Ctl(['lock', name]);
    await eventually(() => holder.lines.some((l) => l.startsWith(`${name}/`)), 10_000, `etcdctl holds (${holder.stderr})`);
    expect(await tryLock(b, s, name, { prefix: name })).toBeUndefined();
    const waiting = lock(b, s, name, { prefix: name });
    await holder.stop('SIGINT');
    const l = await waiting;
    expect(l.token).toBeGreaterThan(held.token);
    await l.unlock();
    await s.close();
  }, 60_000);

  it("the recipes take Go's absolute names: `prefix: '/locks/<job>'` on etcd://host:2379/ is Go's NewMutex(s, \"/locks/<job>\")", async () => {
    const job = uniq('abs');
    const rooted = await EtcdBackend.open(etcd.url('/')); // keys as Go spells them, with a leading '/'
    try {
      const s = await rooted.session({ ttl: 1000 });
      const held = await lock(rooted, s, 'ignored', { prefix: `/locks/${job}` });
      // The raw etcd key Go's concurrency.NewMutex(s, "/locks/<job>") would make, as etcdctl sees it.
      const get = new Ctl(['get', '--prefix', '--keys-only', `/locks/${job}/`]);
      expect(await get.exited).toBe(0);
      expect(get.lines.filter((l) => l !== '')).toEqual([`/locks/${job}/${s.id}`]);
      // etcdctl, which spells the name the same way, waits behind it.
      const ctl = new Ctl(['lock', `/locks/${job}`, 'echo', 'etcdctl-after-roster']);
      await eventually(async () => (await rooted.list(`locks/${job}/`)).items.length === 2, 10_000, `etcdctl waiting (${ctl.stderr})`);
      expect(ctl.lines).not.toContain('etcdctl-after-roster');
      await held.unlock();
      expect(await ctl.exited).toBe(0);
      // Without the trailing '/', the URL has no '/' root: an absolute name is refused, saying why.
      await expect(lock(b, s, 'ignored', { prefix: `/locks/${job}` })).rejects.toThrow(/trailing '\/'/);
      await s.close();
    } finally {
      await rooted.close();
    }
  }, 60_000);
});
