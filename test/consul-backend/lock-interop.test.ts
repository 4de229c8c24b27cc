/**
 * consulLock (roster-sd/consul) against Consul's own lock recipe. There is no Go toolchain with
 * hashicorp/consul/api here, so the other side is Go's api.Lock algorithm (api/lock.go) replayed
 * step by step with the npm `consul` client: a session named "Consul API Lock" (Behavior release,
 * TTL 15 s), then "read the key (blocking while a session holds it); flags must be
 * LockFlagValue; acquire with ?acquire and flags=LockFlagValue", and Unlock = ?release. Flags are
 * read from the raw reply text (the npm client rounds uint64 flags to a double).
 */
import Consul from 'consul';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsulBackend, consulLock, LOCK_FLAG_VALUE } from '../../src/backends/consul/index.js';
import { startConsulServer, type ConsulTestServer } from '../consul/helpers.js';

let srv: ConsulTestServer;
let consul: any; // the package's typings are narrower than what it accepts at run time
let b: ConsulBackend;

beforeAll(async () => {
  srv = await startConsulServer({ consul: { sessionTtlMin: '250ms' } });
  consul = new Consul({ host: srv.host, port: srv.port });
  b = await ConsulBackend.open(`consul://127.0.0.1:${srv.port}`);
});
afterAll(async () => {
  await b?.close();
  await srv?.cleanup();
});

/** GET one key with its exact flags (Go's KV().Get), blocking from `index` when given. */
async function goGet(key: string, index = 0): Promise<{ index: number; pair?: { Flags: string; Session?: string; LockIndex: number; ModifyIndex: number } }> {
  const res = await fetch(`${srv.url}/v1/kv/${key}${index ? `?index=${index}&wait=15s` : ''}`);
  const idx = Number(res.headers.get('x-consul-index'));
  const text = await res.text();
  if (res.status === 404) return { index: idx };
  const flags = /"Flags":(\d+)/.exec(text)![1]!;
  const p = (JSON.parse(text) as { Session?: string; LockIndex: number; ModifyIndex: number }[])[0]!;
  return { index: idx, pair: { Flags: flags, LockIndex: p.LockIndex, ModifyIndex: p.ModifyIndex, ...(p.Session ? { Session: p.Session } : {}) } };
}

/** api.Lock.Lock(): returns once acquired; throws api.ErrLockConflict's message on other flags. */
async function goLock(key: string, session: string): Promise<void> {
  let index = 0;
  for (;;) {
    const { index: idx, pair } = await goGet(key, index);
    if (pair && pair.Flags !== LOCK_FLAG_VALUE) throw new Error('Existing key does not match lock use');
    if (pair?.Session) {
      index = idx;
      continue;
    }
    if (await consul.kv.set({ key, value: 'go', acquire: session, flags: LOCK_FLAG_VALUE })) return;
    await new Promise((r) => setTimeout(r, 100)); // api.Lock waits DefaultLockRetryTime (5 s) here
  }
}

const goSession = async (lockdelay?: string) => ((await consul.session.create({ name: 'Consul API Lock', ttl: '15s', ...(lockdelay ? { lockdelay } : {}) })) as { ID: string }).ID;

describe('consulLock and Go api.Lock on one key', () => {
  it('hand the lock back and forth; the key has Consul lock flags, tokens grow, LockIndex counts acquisitions', async () => {
    const key = `service/job-${process.pid}/leader`;
    const s = await b.session({ ttl: 1000 });
    const go = await goSession();
    const l1 = await consulLock(b, s, key, { value: 'roster' });
    expect((await goGet(key)).pair).toMatchObject({ Flags: LOCK_FLAG_VALUE, Session: s.id, LockIndex: 1 });
    expect((await (await fetch(`${srv.url}/v1/kv/${key}?raw`)).text())).toBe('roster');
    let goHolds = false;
    const goTook = goLock(key, go).then(() => (goHolds = true));
    await new Promise((r) => setTimeout(r, 300)); // a negative check: Go must still be waiting
    expect(goHolds).toBe(false);
    await l1.unlock();
    expect(l1.signal.aborted).toBe(true);
    expect(l1.lost).toBe(false);
    await goTook;
    const goHeld = (await goGet(key)).pair!;
    expect(goHeld).toMatchObject({ Flags: LOCK_FLAG_VALUE, Session: go, LockIndex: 2 });
    // roster waits while Go holds it, and takes it when Go releases.
    let rosterHolds = false;
    const l2p = consulLock(b, s, key).then((l) => ((rosterHolds = true), l));
    await new Promise((r) => setTimeout(r, 300)); // a negative check: roster must still be waiting
    expect(rosterHolds).toBe(false);
    expect(await consul.kv.set({ key, value: 'go', release: go, flags: LOCK_FLAG_VALUE })).toBe(true);
    const l2 = await l2p;
    expect(l2.lockIndex).toBe(3);
    expect(l1.token).toBeLessThan(goHeld.ModifyIndex);
    expect(l2.token).toBeGreaterThan(goHeld.ModifyIndex);
    await l2.unlock();
    await s.close();
    await consul.session.destroy(go);
  });

  it("a Go holder's session invalidated: roster waits out its lock-delay, then acquires", async () => {
    const key = `service/delay-${process.pid}/leader`;
    const go = await goSession('1s');
    await goLock(key, go);
    const s = await b.session({ ttl: 1000 });
    const t0 = Date.now();
    const pl = consulLock(b, s, key);
    await new Promise((r) => setTimeout(r, 200)); // roster is now waiting on the held key
    await consul.session.destroy(go); // Behavior release: the key stays, free, under lock-delay
    const l = await pl;
    const waited = Date.now() - t0;
    expect(waited).toBeGreaterThanOrEqual(1000);
    expect((await goGet(key)).pair).toMatchObject({ Session: s.id, Flags: LOCK_FLAG_VALUE });
    await l.unlock();
    await s.close();
  });

  it("roster's session ending takes the key with it (Behavior delete) and a Go waiter gets the lock", async () => {
    const key = `service/crash-${process.pid}/leader`;
    const s = await b.session({ ttl: 1000 });
    const l = await consulLock(b, s, key);
    const go = await goSession();
    const goTook = goLock(key, go);
    s.orphan(); // a crash: no renewals; Consul invalidates the session within 2 x its TTL
    expect(l.signal.aborted).toBe(true);
    expect(l.lost).toBe(true);
    await goTook;
    expect((await goGet(key)).pair).toMatchObject({ Session: go, LockIndex: 1 }); // a new key: LockIndex starts over (why it is not the token)
    await consul.kv.set({ key, value: 'go', release: go, flags: LOCK_FLAG_VALUE });
    await consul.session.destroy(go);
  });

  it('a key that is not a lock (other flags) is a CONFLICT, as api.ErrLockConflict', async () => {
    const key = `service/data-${process.pid}`;
    await consul.kv.set({ key, value: 'plain data' });
    const s = await b.session({ ttl: 1000 });
    await expect(consulLock(b, s, key)).rejects.toMatchObject({ code: 'CONFLICT' });
    await s.close();
  });

  it('roster contenders exclude each other and tokens grow with every acquisition', async () => {
    const key = `service/many-${process.pid}/leader`;
    const clients = await Promise.all(Array.from({ length: 3 }, () => ConsulBackend.open(`consul://127.0.0.1:${srv.port}`)));
    try {
      let inside = 0;
      let max = 0;
      const tokens: number[] = [];
      await Promise.all(
        clients.map(async (c) => {
          const s = await c.session({ ttl: 1000 });
          for (let i = 0; i < 4; i++) {
            const l = await consulLock(c, s, key);
            inside++;
            max = Math.max(max, inside);
            tokens.push(l.token);
            await new Promise((r) => setTimeout(r, 5));
            inside--;
            await l.unlock();
          }
          await s.close();
        }),
      );
      expect(max).toBe(1);
      expect(tokens).toHaveLength(12);
      for (let i = 1; i < tokens.length; i++) expect(tokens[i]!).toBeGreaterThan(tokens[i - 1]!);
    } finally {
      await Promise.all(clients.map((c) => c.close()));
    }
  }, 30_000);
});
