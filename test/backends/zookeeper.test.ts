/**
 * The ZooKeeper backend against a real ZooKeeper (Debian's package; tickTime 200 ms so session
 * timeouts can be short): the whole conformance suite (restart = kill -9 and start on the same data
 * dir; no `compact` hook: ZooKeeper keeps no history to compact), then what is specific to
 * ZooKeeper: the znode layout, session re-binding, negotiated TTLs, fromRevision's honest limits,
 * coalescing without invented events, prefixes that are not directories, ACLs and digest auth.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend, KeyValue, WatchEvent } from '../../src/contract/types.js';
import { openBackend } from '../../src/index.js';
import { ZooKeeperBackend, parseZkUrl } from '../../src/backends/zookeeper/index.js';
import { RosterError } from '../../src/core/errors.js';
import { conformance } from '../../src/testing/conformance.js';
import { Reader, readSnapshot, uniquePrefix } from '../helpers/watch.js';
import { rawClient, startZooKeeper, type RawZk, type ZooKeeperServer } from '../helpers/zookeeper.js';

let zk: ZooKeeperServer;
beforeAll(async () => {
  zk = await startZooKeeper();
});
afterAll(async () => {
  await zk?.stop();
});

function code(e: unknown): string | undefined {
  return e instanceof RosterError ? e.code : undefined;
}
async function rejectsWithCode(p: Promise<unknown>, expected: string): Promise<void> {
  try {
    await p;
  } catch (e) {
    expect(code(e), `expected ${expected}, got ${String(e)}`).toBe(expected);
    return;
  }
  throw new Error(`expected a ${expected} error, but the call succeeded`);
}

describe('zk:// conformance', () => {
  conformance({ describe, it, expect, beforeAll, afterAll }, {
    open: () => ZooKeeperBackend.open(zk.url('/roster-conformance'), { requestTimeout: 5000 }),
    ttl: 1000,
    restart: () => zk.restart(),
    sequential: true,
  });
});

describe('zk:// specifics', () => {
  const CHROOT = '/roster-specifics';
  let b: ZooKeeperBackend;
  let b2: ZooKeeperBackend;
  let raw: RawZk;
  const opened: Backend[] = [];
  const open = async (url = zk.url(CHROOT), opts: Record<string, unknown> = {}) => {
    const x = await ZooKeeperBackend.open(url, { requestTimeout: 5000, ...opts });
    opened.push(x);
    return x;
  };
  beforeAll(async () => {
    b = await open();
    b2 = await open();
    raw = await rawClient(zk.connectString);
  });
  afterAll(async () => {
    await Promise.allSettled(opened.map((x) => x.close()));
    await raw?.close();
  });

  it('parses zk:// URLs: default port, chroot, credentials kept out of the canonical URL', async () => {
    expect(parseZkUrl('zk://a:1,b/x/y/')).toMatchObject({ servers: 'a:1,b:2181', chroot: 'x/y', url: 'zk://a:1,b:2181/x/y' });
    expect(parseZkUrl('zookeeper://u:p@h')).toMatchObject({ servers: 'h:2181', chroot: '', url: 'zk://h:2181/', auth: 'u:p' });
    for (const bad of ['zk://', 'zk://h:99999/x', 'zk://h/a//b', 'zk://h/a/../b', 'http://h:2181', 'zk://h x/']) {
      expect(() => parseZkUrl(bad), bad).toThrow(/invalid/);
    }
    await rejectsWithCode(ZooKeeperBackend.open(zk.url(CHROOT), { bogus: 1 } as never), 'INVALID_ARGUMENT');
    await rejectsWithCode(ZooKeeperBackend.open(zk.url(CHROOT), { acl: 'creator' }), 'INVALID_ARGUMENT');
    await rejectsWithCode(ZooKeeperBackend.open(zk.url(CHROOT), { deafAfter: 'soon' }), 'INVALID_ARGUMENT');
    await rejectsWithCode(ZooKeeperBackend.open(zk.url(CHROOT), { deafAfter: 10 }), 'INVALID_ARGUMENT');
    opened.push(await ZooKeeperBackend.open(zk.url(CHROOT), { deafAfter: '1s' }));
    expect(b.url).toBe(`zk://127.0.0.1:${zk.port}${CHROOT}`);
    const viaOpen = await openBackend(zk.url(CHROOT));
    opened.push(viaOpen);
    expect(viaOpen.kind).toBe('zookeeper');
  });

  it('open() fails with UNAVAILABLE, bounded, when no server answers', async () => {
    const t0 = Date.now();
    await rejectsWithCode(ZooKeeperBackend.open('zk://127.0.0.1:1/x', { connectTimeout: 500 }), 'UNAVAILABLE');
    expect(Date.now() - t0).toBeLessThan(5000);
  });

  it('keys are znodes with data; parents are null-data znodes and not keys; "" is a key', async () => {
    const p = uniquePrefix('layout');
    await b.put(`${p}a/b/c`, 'deep');
    await b.put(`${p}e`, '');
    const base = `${CHROOT}/${p.slice(0, -1)}`;
    expect(await raw.getData(`${base}/a`)).toMatchObject({ data: null });
    expect(await raw.getData(`${base}/a/b/c`)).toMatchObject({ data: 'deep', version: 0 });
    expect(await raw.getData(`${base}/e`)).toMatchObject({ data: '' });
    expect((await b2.list(p)).items.map((i) => [i.key, i.value])).toEqual([
      [`${p}a/b/c`, 'deep'],
      [`${p}e`, ''],
    ]);
    expect(await b2.get(`${p}a`)).toBeUndefined();
    // A foreign znode with data is a key like any other (version = stat.version + 1).
    await raw.create(`${base}/foreign`, 'from-java');
    await raw.setData(`${base}/foreign`, 'v2');
    expect(await b.get(`${p}foreign`)).toMatchObject({ value: 'v2', version: 2 });
  });

  it('a key with child keys: delete keeps the znode as a parent and drops the value', async () => {
    const p = uniquePrefix('kc');
    await b.put(`${p}k`, 'parent');
    await b.put(`${p}k/child`, 'c');
    const w = new Reader(b2.watch(p));
    const snap = await readSnapshot(w);
    expect([...snap.items.keys()]).toEqual([`${p}k`, `${p}k/child`]);
    const d = await b.delete(`${p}k`);
    expect(d.deleted).toBe(true);
    const ev = await w.next();
    expect(ev).toMatchObject({ type: 'delete', key: `${p}k`, revision: d.revision });
    expect((await b.list(p)).items.map((i) => i.key)).toEqual([`${p}k/child`]);
    expect((await b.delete(`${p}k`)).deleted).toBe(false);
    // Putting it again makes the parent znode a key again.
    await b.put(`${p}k`, 'back');
    expect((await w.next()).type).toBe('put');
    expect((await b2.get(`${p}k`))?.value).toBe('back');
    await w.return();
  });

  it('session binding: a put under another session re-creates the znode atomically; close deletes only its own', async () => {
    const p = uniquePrefix('rebind');
    const s1 = await b.session({ ttl: 2000 });
    const s2 = await b.session({ ttl: 2000 });
    expect(s1.id).not.toBe(s2.id);
    const a = await b.put(`${p}k`, 'one', { session: s1 });
    expect(a.kv.session).toBe(s1.id);
    const w = new Reader(b2.watch(p));
    await readSnapshot(w);
    const c = await b.put(`${p}k`, 'two', { session: s2 });
    expect(c.kv).toMatchObject({ session: s2.id, version: 1, value: 'two' });
    expect(c.kv.createRevision).toBeGreaterThan(a.kv.createRevision);
    // One atomic multi: the watcher sees the old incarnation go and the new one come, nothing else.
    const evs = await w.take(2);
    expect(evs.map((e) => e.type)).toEqual(['delete', 'put']);
    expect((await raw.getData(`${CHROOT}/${p}k`))?.ephemeralOwner).toBe(s2.id);
    await s1.close();
    expect((await b2.get(`${p}k`))?.value).toBe('two');
    // A put without a session detaches it (the key then outlives s2).
    const d = await b.put(`${p}k`, 'three');
    expect(d.kv.session).toBeUndefined();
    await s2.close();
    expect((await b2.get(`${p}k`))?.value).toBe('three');
    // CAS still compares versions across a re-bind.
    const s3 = await b.session({ ttl: 2000 });
    await rejectsWithCode(b.put(`${p}k`, 'x', { session: s3, ifVersion: 5 }), 'CONFLICT');
    const e = await b.put(`${p}k`, 'four', { session: s3, ifVersion: d.kv.version });
    expect(e.kv.session).toBe(s3.id);
    await s3.close();
    expect(await b2.get(`${p}k`)).toBeUndefined();
    await w.return();
  });

  it('ephemeral znodes cannot have children: UNSUPPORTED, nothing written', async () => {
    const p = uniquePrefix('ephkids');
    const s = await b.session({ ttl: 2000 });
    await b.put(`${p}e`, 'x', { session: s });
    await rejectsWithCode(b.put(`${p}e/child`, 'y'), 'UNSUPPORTED');
    await b.put(`${p}dir/child`, 'y');
    await rejectsWithCode(b.put(`${p}dir`, 'z', { session: s }), 'UNSUPPORTED');
    expect((await b.list(p)).items.map((i) => i.key)).toEqual([`${p}dir/child`, `${p}e`]);
    await s.close();
  });

  it('values beyond ZooKeeper\'s packet limit are TOO_LARGE; the connection survives', async () => {
    const p = uniquePrefix('big');
    await rejectsWithCode(b.put(`${p}k`, 'x'.repeat(1024 * 1024 - 100)), 'TOO_LARGE');
    const ok = 'y'.repeat(900 * 1024);
    await b.put(`${p}k`, ok);
    expect((await b2.get(`${p}k`))?.value.length).toBe(ok.length);
  });

  it('TTL = negotiated session timeout; reported honestly when the server clamps it', async () => {
    const small = await b.session({ ttl: 500 });
    expect(small.ttl).toBe(500); // within [2, 300] ticks of 200 ms
    const big = await b.session({ ttl: 120_000 });
    expect(big.ttl).toBe(zk.tickTime * 300); // the server's maxSessionTimeout: less than asked, and said so
    await small.close();
    await big.close();
  });

  it('watch on a prefix that is not a directory, and on a directory that does not exist yet', async () => {
    const p = uniquePrefix('np');
    await b.put(`${p}a`, '1');
    await b.put(`${p}ab`, '2');
    await b.put(`${p}b`, '3');
    const w = new Reader(b2.watch(`${p}ab`));
    const snap = await readSnapshot(w);
    expect([...snap.items.keys()]).toEqual([`${p}ab`]);
    await b.put(`${p}abc`, '4');
    await b.put(`${p}b2`, 'not mine');
    await b.put(`${p}ab/deep`, '5');
    const evs = await w.take(2);
    expect(evs.map((e) => (e as { key: string }).key)).toEqual([`${p}abc`, `${p}ab/deep`]);
    await w.return();

    const deep = `${uniquePrefix('missing')}x/y/`;
    const w2 = new Reader(b2.watch(deep));
    expect((await readSnapshot(w2)).items.size).toBe(0);
    const r = await b.put(`${deep}z`, 'appeared');
    expect(await w2.next()).toMatchObject({ type: 'put', key: `${deep}z`, revision: r.revision });
    await w2.return();
  });

  it('progress markers (WatchOptions.progress): a re-read that finds nothing new in view is a synced at its revision', async () => {
    const p = uniquePrefix('progress');
    await b.put(`${p}mine/k`, '1');
    const plain = new Reader(b2.watch(`${p}mine/`));
    const marked = new Reader(b2.watch(`${p}mine/`, { progress: true }));
    await readSnapshot(plain);
    const { revision: r0 } = await readSnapshot(marked);
    // A key created and deleted under the watched directory: the mirror re-reads it, finds the
    // same children, and says so at the read's revision (no put or delete is invented).
    const created = await b.put(`${p}mine/gone`, 'x');
    const deleted = await b.delete(`${p}mine/gone`);
    const evs = await marked.until((e) => e.type === 'synced' && e.revision >= deleted.revision, 5000, 'progress past the delete');
    expect(evs.every((e) => e.type === 'synced' || ((e.type === 'put' || e.type === 'delete') && e.key === `${p}mine/gone`))).toBe(true);
    expect(evs.filter((e) => e.type === 'synced').every((e) => e.revision > r0)).toBe(true);
    expect(created.revision).toBeGreaterThan(r0);
    // Without the option the stream is as before: the next event is the next change.
    const next = await b.put(`${p}mine/k`, '2');
    expect(await plain.until((e) => e.type === 'put' && e.key === `${p}mine/k`)).toEqual(
      expect.not.arrayContaining([expect.objectContaining({ type: 'synced' })]),
    );
    expect((await marked.until((e) => e.type === 'put' && e.key === `${p}mine/k`)).at(-1)).toMatchObject({ revision: next.revision });
    await plain.return();
    await marked.return();
  });

  it('fromRevision: exact after own writes (intermediate versions too), reset when ZooKeeper cannot prove the gap', async () => {
    const p = uniquePrefix('from');
    const r0 = await b.put(`${p}a`, '0');
    const puts = [await b.put(`${p}a`, '1'), await b.put(`${p}a`, '2'), await b.put(`${p}a`, '3')];
    const w = new Reader(b2.watch(p, { fromRevision: r0.revision }));
    const evs = await w.take(3);
    expect(evs.map((e) => [e.type, e.revision, (e as { kv?: KeyValue }).kv?.value])).toEqual(puts.map((x, i) => ['put', x.revision, String(i + 1)]));
    await w.return();

    // Another client (not this process's roster) deletes a key: nothing proves what happened → reset.
    const r1 = await b.put(`${p}b`, 'b');
    await raw.remove(`${CHROOT}/${p}a`);
    await raw.create(`${CHROOT}/${p}c`, 'c');
    const w2 = new Reader(b2.watch(p, { fromRevision: r1.revision }));
    const first = await w2.next();
    expect(first.type).toBe('reset');
    if (first.type !== 'reset') return;
    expect(first.items.map((i) => [i.key, i.value])).toEqual([
      [`${p}b`, 'b'],
      [`${p}c`, 'c'],
    ]);
    expect(await w2.next()).toMatchObject({ type: 'synced', revision: first.revision });
    const r2 = await b.put(`${p}d`, 'd');
    expect(await w2.next()).toMatchObject({ type: 'put', key: `${p}d`, revision: r2.revision });
    await w2.return();

    // Ephemeral keys deleted by ZooKeeper itself (session closed) are not journalled either → reset.
    const s = await b.session({ ttl: 2000 });
    await b.put(`${p}e`, 'eph', { session: s });
    const r3 = await b.put(`${p}f`, 'f');
    await s.close();
    const w3 = new Reader(b2.watch(p, { fromRevision: r3.revision }));
    expect((await w3.next()).type).toBe('reset');
    await w3.return();
  });

  it('foreign rapid writes are coalesced, never invented: every put is a real (version, value), revisions increase', async () => {
    const p = uniquePrefix('coalesce');
    const path = `${CHROOT}/${p}k`;
    await raw.create(`${CHROOT}/${p.slice(0, -1)}`);
    await raw.create(path, 'v0');
    const w = new Reader(b.watch(p));
    await readSnapshot(w);
    for (let i = 1; i <= 50; i++) await raw.setData(path, `v${i}`);
    await raw.remove(path);
    const seen: WatchEvent[] = [];
    for (;;) {
      const ev = await w.next(5000, 'the final delete');
      seen.push(ev);
      if (ev.type === 'delete') break;
    }
    let last = 0;
    for (const ev of seen) {
      expect(ev.revision).toBeGreaterThan(last);
      last = ev.revision;
      if (ev.type === 'put') expect(ev.kv.value).toBe(`v${ev.kv.version - 1}`);
    }
    const puts = seen.filter((e) => e.type === 'put');
    expect(puts.length).toBeGreaterThanOrEqual(1);
    expect(puts.length).toBeLessThanOrEqual(50);
    await w.return();
  });

  it('keys deleted and re-created faster than the watcher re-reads end right (incarnation, value, order)', async () => {
    const p = uniquePrefix('flap');
    const dir = `${CHROOT}/${p.slice(0, -1)}`;
    await raw.create(dir);
    for (let k = 0; k < 5; k++) await raw.create(`${dir}/k${k}`, 'v0');
    const w = new Reader(b.watch(p));
    const view = new Map((await readSnapshot(w)).items);
    const cycles = Array.from({ length: 5 }, async (_, k) => {
      for (let i = 1; i <= 20; i++) {
        await raw.remove(`${dir}/k${k}`);
        await raw.create(`${dir}/k${k}`, `v${i}`);
      }
    });
    await Promise.all(cycles);
    const truth = await b2.list(p);
    const want = new Map(truth.items.map((kv) => [kv.key, kv]));
    const created = new Map<string, number>();
    let last = 0;
    while (![...want.values()].every((kv) => view.get(kv.key) === kv.value && created.get(kv.key) === kv.createRevision)) {
      const ev = await w.next(5000, 'the final incarnations');
      expect(ev.revision).toBeGreaterThanOrEqual(last);
      last = ev.revision;
      if (ev.type === 'put') {
        view.set(ev.key, ev.kv.value);
        created.set(ev.key, ev.kv.createRevision);
      } else if (ev.type === 'delete') view.delete(ev.key);
    }
    expect([...view.keys()].sort()).toEqual([...want.keys()]);
    await w.return();
  });

  it('digest auth and ACLs: creator-only nodes are unreadable to others, creator-read ones read-only', async () => {
    const base = `/roster-acl-${Date.now().toString(36)}`;
    const alice = await open(zk.url(base), { auth: 'alice:secret', acl: 'creator' });
    await alice.put('private/k', 'mine');
    const anon = await open(zk.url(base));
    await rejectsWithCode(anon.get('private/k'), 'PERMISSION_DENIED');
    await rejectsWithCode(anon.list('private/'), 'PERMISSION_DENIED');
    const w = new Reader(anon.watch('private/'));
    await expect(w.next(5000)).rejects.toMatchObject({ code: 'PERMISSION_DENIED' });
    const alsoAlice = await open(`zk://alice:secret@127.0.0.1:${zk.port}${base}`);
    expect((await alsoAlice.get('private/k'))?.value).toBe('mine');
    const mallory = await open(zk.url(base), { auth: 'alice:wrong' });
    await rejectsWithCode(mallory.get('private/k'), 'PERMISSION_DENIED');

    const base2 = `${base}-public`;
    const bob = await open(zk.url(base2), { auth: 'bob:pw', acl: 'creator-read' });
    await bob.put('pub/k', 'readable');
    const reader = await open(zk.url(base2));
    expect((await reader.get('pub/k'))?.value).toBe('readable');
    await rejectsWithCode(reader.put('pub/k', 'tampered'), 'PERMISSION_DENIED');
    await rejectsWithCode(reader.delete('pub/k'), 'PERMISSION_DENIED');
    expect((await bob.get('pub/k'))?.value).toBe('readable');
  });

  it('an unknown session object, or one from another backend, is rejected', async () => {
    const p = uniquePrefix('foreign-session');
    const s = await b2.session({ ttl: 2000 });
    await rejectsWithCode(b.put(`${p}k`, 'x', { session: s }), 'INVALID_ARGUMENT');
    await s.close();
  });
});
