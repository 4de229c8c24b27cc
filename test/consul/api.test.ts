/**
 * Consul API semantics on roster server, over raw HTTP (what any client sends):
 * - X-Consul-Index: never 0, monotonic, and across a kill -9 restart;
 * - blocking queries wake on a change to what they read and nothing else;
 * - sessions: Behavior release/delete when the lease ends behind the client's back, lock-delay;
 * - Consul's own lock (api/lock.go) and semaphore (api/semaphore.go) recipes, replayed call by
 *   call with their uint64 flag values, hold mutual exclusion;
 * - the JSON decodes under Go's api rules on every read endpoint.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ServerProcess } from '../helpers/server.js';
import { goAgentSelf, goCatalogService, goCatalogServices, goKVPair, goList, goServiceEntry, goSessionEntry } from './go-shapes.js';
import { startConsulServer, type ConsulTestServer } from './helpers.js';

let srv: ConsulTestServer;
let base: string;

beforeAll(async () => {
  srv = await startConsulServer();
  base = srv.url;
});
afterAll(async () => {
  await srv?.cleanup();
});

async function call(method: string, path: string, body?: string): Promise<{ status: number; index: bigint; text: string; json: () => any }> {
  const res = await fetch(`${base}${path}`, { method, ...(body !== undefined ? { body } : {}) });
  const text = await res.text();
  const idx = res.headers.get('x-consul-index');
  return { status: res.status, index: BigInt(idx ?? '0'), text, json: () => JSON.parse(text) };
}

describe('indexes and blocking', () => {
  it('X-Consul-Index is never 0 and a blocked read wakes only for what it reads', async () => {
    const empty = await call('GET', '/v1/health/service/nothing-here');
    expect(empty.status).toBe(200);
    expect(empty.text).toBe('[]'); // unknown service: 200 []
    expect(empty.index).toBeGreaterThan(0n);
    const missing = await call('GET', '/v1/kv/no/such/key');
    expect(missing.status).toBe(404);
    expect(missing.index).toBeGreaterThan(0n); // 404 with X-Consul-Index (clients block on it)

    await call('PUT', '/v1/agent/service/register', JSON.stringify({ Name: 'alpha', ID: 'alpha-1', Port: 1 }));
    const a = await call('GET', '/v1/health/service/alpha');
    const b = await call('GET', '/v1/health/service/beta');
    let alphaWoke = false;
    const parkedAlpha = call('GET', `/v1/health/service/alpha?index=${a.index}&wait=3s`).then((r) => ((alphaWoke = true), r));
    const parkedBeta = call('GET', `/v1/health/service/beta?index=${b.index}&wait=10s`);
    const parkedKey = call('GET', `/v1/kv/watched?index=${missing.index}&wait=10s`);
    // Changes elsewhere: another service, another key. The parked reads stay parked.
    await call('PUT', '/v1/agent/service/register', JSON.stringify({ Name: 'gamma', ID: 'gamma-1', Port: 1 }));
    await call('PUT', '/v1/kv/unwatched', 'x');
    await new Promise((r) => setImmediate(r));
    expect(alphaWoke).toBe(false);
    await call('PUT', '/v1/agent/service/register', JSON.stringify({ Name: 'beta', ID: 'beta-1', Port: 2 }));
    const beta = await parkedBeta;
    expect(beta.index).toBeGreaterThan(b.index);
    expect(beta.json().map((e: any) => e.Service.ID)).toEqual(['beta-1']);
    await call('PUT', '/v1/kv/watched', 'now');
    const key = await parkedKey;
    expect(key.status).toBe(200);
    expect(Buffer.from(key.json()[0].Value, 'base64').toString()).toBe('now');
    // alpha times out with its index unchanged.
    const alpha = await parkedAlpha;
    expect(alpha.index).toBe(a.index);
  });

  it('recurse reads block on the prefix, and a delete under it wakes them with a higher index', async () => {
    await call('PUT', '/v1/kv/tree/a', '1');
    const t = await call('GET', '/v1/kv/tree/?recurse');
    const parked = call('GET', `/v1/kv/tree/?recurse&index=${t.index}&wait=10s`);
    await call('PUT', '/v1/kv/treehouse', 'not under tree/');
    await call('DELETE', '/v1/kv/tree/a');
    const r = await parked;
    expect(r.status).toBe(404);
    expect(r.index).toBeGreaterThan(t.index);
  });

  it('wait is capped, parsed as a Go duration, and a bad one is a 400', async () => {
    expect((await call('GET', '/v1/catalog/services?wait=1m30s&index=1')).status).toBe(200); // index 1 is behind: answers at once
    expect((await call('GET', '/v1/catalog/services?wait=10')).status).toBe(400);
    expect((await call('GET', '/v1/catalog/services?index=-1')).status).toBe(400);
  });
});

describe('X-Consul-Index across a restart', () => {
  it('keeps growing after kill -9 and restart on the same data dir', async () => {
    const p = await ServerProcess.start({ options: { consul: { nodeName: 'restart-node' } } });
    try {
      const url = p.url;
      const get = async (path: string) => BigInt((await fetch(`${url}${path}`)).headers.get('x-consul-index') ?? '0');
      await fetch(`${url}/v1/agent/service/register`, { method: 'PUT', body: JSON.stringify({ Name: 'web', ID: 'web-1', Port: 80 }) });
      await fetch(`${url}/v1/kv/k`, { method: 'PUT', body: 'v' });
      const before = [await get('/v1/health/service/web'), await get('/v1/kv/k'), await get('/v1/catalog/services'), await get('/v1/health/service/none')];
      await p.restart();
      const after = [await get('/v1/health/service/web'), await get('/v1/kv/k'), await get('/v1/catalog/services'), await get('/v1/health/service/none')];
      for (let i = 0; i < before.length; i++) {
        expect(after[i]).toBeGreaterThan(0n);
        expect(after[i]).toBeGreaterThanOrEqual(before[i]!);
      }
      // A blocked read with the index from before the restart does not wake without a change...
      const t0 = Date.now();
      const r = await fetch(`${url}/v1/kv/k?index=${after[1]}&wait=300ms`);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
      expect(BigInt(r.headers.get('x-consul-index')!)).toBe(after[1]);
      // ...and the registration survived (an agent registration is not session-bound).
      const entries = (await (await fetch(`${url}/v1/health/service/web`)).json()) as unknown[];
      expect(entries).toHaveLength(1);
    } finally {
      await p.cleanup();
    }
  });
});

describe('sessions', () => {
  const leaseOf = async (id: string) => {
    const list = (await (await fetch(`${base}/api/v1/keys?prefix=${encodeURIComponent(`consul/sessions/${id}`)}`)).json()) as { items: { session: string }[] };
    return list.items[0]!.session;
  };

  it('TTL floor 10 s, 24 h ceiling, Go durations, engine lease of 2 x TTL', async () => {
    expect((await call('PUT', '/v1/session/create', JSON.stringify({ TTL: '5s' }))).status).toBe(400);
    expect((await call('PUT', '/v1/session/create', JSON.stringify({ TTL: '25h' }))).status).toBe(400);
    const c = await call('PUT', '/v1/session/create', JSON.stringify({ TTL: '10s' }));
    expect(c.status).toBe(200);
    const id = c.json().ID as string;
    expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const lease = await leaseOf(id);
    const info = (await (await fetch(`${base}/api/v1/sessions/${lease}`)).json()) as { ttl: number };
    expect(info.ttl).toBe(20_000); // Consul invalidates at 2 x TTL
    const i = await call('GET', `/v1/session/info/${id}`);
    goList(goSessionEntry)(i.json(), 'session/info');
    expect(i.json()[0]).toMatchObject({ TTL: '10s', Behavior: 'release', LockDelay: 15e9, NodeChecks: ['serfHealth'] });
    await call('PUT', `/v1/session/destroy/${id}`);
  });

  it('Behavior=release keeps the key and clears its session when the lease ends behind the client; lock-delay then holds it', async () => {
    const id = (await call('PUT', '/v1/session/create', JSON.stringify({ TTL: '10s', LockDelay: '2s' }))).json().ID as string;
    expect((await call('PUT', `/v1/kv/jobs/leader?acquire=${id}`, 'me')).text).toBe('true');
    const before = await call('GET', '/v1/kv/jobs/leader');
    const parked = call('GET', `/v1/kv/jobs/leader?index=${before.index}&wait=10s`);
    // End the lease the way expiry does (the engine drops it), not through /v1.
    expect((await fetch(`${base}/api/v1/sessions/${await leaseOf(id)}`, { method: 'DELETE', headers: { 'x-roster-request': '1' } })).status).toBe(204);
    const after = (await parked).json()[0];
    expect(after.Session).toBeUndefined();
    expect(Buffer.from(after.Value, 'base64').toString()).toBe('me');
    expect(after.LockIndex).toBe(1);
    // Lock-delay: another session cannot take it for 2 s.
    const other = (await call('PUT', '/v1/session/create', JSON.stringify({ TTL: '10s' }))).json().ID as string;
    expect((await call('PUT', `/v1/kv/jobs/leader?acquire=${other}`, 'you')).text).toBe('false');
    expect((await call('GET', `/v1/session/info/${id}`)).text).toBe('[]');
    expect((await call('PUT', `/v1/session/renew/${id}`)).status).toBe(404);
    await call('PUT', `/v1/session/destroy/${other}`);
  });

  it('Behavior=delete removes held keys with the lease; release and re-acquire bump LockIndex', async () => {
    const id = (await call('PUT', '/v1/session/create', JSON.stringify({ TTL: '10s', Behavior: 'delete', LockDelay: 0 }))).json().ID as string;
    expect((await call('PUT', `/v1/kv/eph?acquire=${id}`, 'a')).text).toBe('true');
    expect((await call('PUT', `/v1/kv/eph?release=${id}`, 'b')).text).toBe('true');
    expect((await call('PUT', `/v1/kv/eph?acquire=${id}`, 'c')).text).toBe('true');
    expect((await call('GET', '/v1/kv/eph')).json()[0]).toMatchObject({ LockIndex: 2, Session: id });
    expect((await fetch(`${base}/api/v1/sessions/${await leaseOf(id)}`, { method: 'DELETE', headers: { 'x-roster-request': '1' } })).status).toBe(204);
    expect((await call('GET', '/v1/kv/eph')).status).toBe(404);
    expect((await call('PUT', `/v1/kv/eph?acquire=${id}`, 'c')).status).toBe(400); // invalid session
  });

  it('a session bound to a check is destroyed when the check goes critical', async () => {
    await call('PUT', '/v1/agent/service/register', JSON.stringify({ Name: 'sess-svc', ID: 'sess-1', Check: { TTL: '30s', Status: 'passing' } }));
    const id = (await call('PUT', '/v1/session/create', JSON.stringify({ ServiceChecks: [{ ID: 'service:sess-1' }], NodeChecks: ['serfHealth'] }))).json().ID as string;
    expect((await call('GET', `/v1/session/info/${id}`)).json()).toHaveLength(1);
    const s = await call('GET', '/v1/session/list');
    const parked = call('GET', `/v1/session/list?index=${s.index}&wait=10s`);
    await call('PUT', '/v1/agent/check/fail/service:sess-1');
    const r = await parked;
    expect(r.json().map((x: any) => x.ID)).not.toContain(id);
    // A critical check refuses a new session, as Consul does.
    expect((await call('PUT', '/v1/session/create', JSON.stringify({ ServiceChecks: [{ ID: 'service:sess-1' }] }))).status).toBe(400);
  });
});

// Consul's api/lock.go and api/semaphore.go, replayed over HTTP.
const LOCK_FLAG = 0x2ddccbc058a50c18n; // api.LockFlagValue, above 2^53
const SEMAPHORE_FLAG = 0xe0f69a2baa414de0n; // api.SemaphoreFlagValue

async function goLock(key: string, name: string, critical: () => Promise<void>): Promise<void> {
  // createSession: Name "Consul API Lock", TTL 15s (Behavior release, LockDelay default 15s)
  const session = (await call('PUT', '/v1/session/create', JSON.stringify({ Name: `Consul API Lock ${name}`, TTL: '15s' }))).json().ID as string;
  let waitIndex = 0n;
  for (;;) {
    const r = await call('GET', `/v1/kv/${key}?index=${waitIndex}&wait=15000ms`);
    const pair = r.status === 200 ? r.json()[0] : undefined;
    if (pair && BigInt(JSON.parse(r.text.replace(/"Flags":(\d+)/, '"Flags":"$1"'))[0].Flags) !== LOCK_FLAG) throw new Error('ErrLockConflict');
    if (pair?.Session) {
      waitIndex = r.index;
      continue;
    }
    const acq = await call('PUT', `/v1/kv/${key}?acquire=${session}&flags=${LOCK_FLAG}`, name);
    if (acq.text === 'true') break;
    waitIndex = 0n; // lock-delay or a racing acquirer: look again
    await new Promise((res) => setTimeout(res, 50));
  }
  try {
    await critical();
  } finally {
    // Unlock: release with the lock flag, then destroy the session.
    expect((await call('PUT', `/v1/kv/${key}?release=${session}&flags=${LOCK_FLAG}`, '')).text).toBe('true');
    await call('PUT', `/v1/session/destroy/${session}`);
  }
}

describe("Consul's lock and semaphore recipes", () => {
  it('lock.go: three contenders, one holder at a time, flags kept exact', async () => {
    let holders = 0;
    let max = 0;
    const order: string[] = [];
    await Promise.all(
      ['a', 'b', 'c'].map((n) =>
        goLock('service/job/leader', n, async () => {
          holders++;
          max = Math.max(max, holders);
          order.push(n);
          await new Promise((r) => setTimeout(r, 30));
          holders--;
        }),
      ),
    );
    expect(max).toBe(1);
    expect(order.sort()).toEqual(['a', 'b', 'c']);
    const raw = (await call('GET', '/v1/kv/service/job/leader')).text;
    expect(raw).toContain(`"Flags":${LOCK_FLAG}`);
    goList(goKVPair)(JSON.parse(raw.replace(/"Flags":\d+/, '"Flags":0')), 'kv');
    // lock.go's Destroy: DeleteCAS on the free lock.
    const idx = (await call('GET', '/v1/kv/service/job/leader')).json()[0].ModifyIndex;
    expect((await call('DELETE', `/v1/kv/service/job/leader?cas=${idx - 1}`)).text).toBe('false');
    expect((await call('DELETE', `/v1/kv/service/job/leader?cas=${idx}`)).text).toBe('true');
  });

  it('semaphore.go: limit 2 over 4 contenders, holders tracked in the .lock key with CAS', async () => {
    const prefix = 'service/sem';
    const limit = 2;
    let inside = 0;
    let max = 0;
    const contender = async (name: string) => {
      const session = (await call('PUT', '/v1/session/create', JSON.stringify({ Name: `Consul API Semaphore ${name}`, TTL: '15s' }))).json().ID as string;
      expect((await call('PUT', `/v1/kv/${prefix}/${session}?acquire=${session}&flags=${SEMAPHORE_FLAG}`, name)).text).toBe('true');
      let waitIndex = 0n;
      for (;;) {
        const r = await call('GET', `/v1/kv/${prefix}/?recurse&index=${waitIndex}&wait=15000ms`);
        const pairs = (r.status === 200 ? JSON.parse(r.text.replace(/"Flags":(\d+)/g, '"Flags":"$1"')) : []) as { Key: string; Value: string | null; Session?: string; ModifyIndex: number; Flags: string }[];
        const lockPair = pairs.find((p) => p.Key === `${prefix}/.lock`);
        const state = lockPair?.Value ? (JSON.parse(Buffer.from(lockPair.Value, 'base64').toString()) as { Limit: number; Holders: Record<string, boolean> }) : { Limit: limit, Holders: {} };
        // pruneDeadHolders: a holder without a live contender key is gone.
        const alive = new Set(pairs.filter((p) => p.Session && BigInt(p.Flags) === SEMAPHORE_FLAG).map((p) => p.Session!));
        for (const h of Object.keys(state.Holders)) if (!alive.has(h)) delete state.Holders[h];
        if (Object.keys(state.Holders).length >= state.Limit) {
          waitIndex = r.index;
          continue;
        }
        state.Holders[session] = true;
        const cas = lockPair ? lockPair.ModifyIndex : 0;
        const set = await call('PUT', `/v1/kv/${prefix}/.lock?cas=${cas}&flags=${SEMAPHORE_FLAG}`, JSON.stringify(state));
        if (set.text === 'true') break;
        waitIndex = 0n;
      }
      inside++;
      max = Math.max(max, inside);
      await new Promise((r) => setTimeout(r, 40));
      inside--;
      // Release: remove ourselves from the holders with CAS, then delete the contender key.
      for (;;) {
        const r = await call('GET', `/v1/kv/${prefix}/.lock`);
        const p = r.json()[0];
        const state = JSON.parse(Buffer.from(p.Value, 'base64').toString()) as { Holders: Record<string, boolean> };
        delete state.Holders[session];
        if ((await call('PUT', `/v1/kv/${prefix}/.lock?cas=${p.ModifyIndex}&flags=${SEMAPHORE_FLAG}`, JSON.stringify(state))).text === 'true') break;
      }
      expect((await call('DELETE', `/v1/kv/${prefix}/${session}`)).text).toBe('true');
      await call('PUT', `/v1/session/destroy/${session}`);
    };
    await Promise.all(['w', 'x', 'y', 'z'].map(contender));
    expect(max).toBe(limit);
  });
});

describe("Go's api decoding rules on every read endpoint", () => {
  it('maps are string to string, lists never null, agent/self values all objects', async () => {
    await call('PUT', '/v1/agent/service/register', JSON.stringify({ Name: 'shapes', ID: 'shapes-1', Port: 1, Tags: ['t'], TaggedAddresses: { lan: { Address: '10.0.0.1', Port: 1 } }, Check: { TTL: '10s' } }));
    await call('PUT', '/v1/agent/service/register', JSON.stringify({ Name: 'shapes', ID: 'shapes-2' }));
    goAgentSelf((await call('GET', '/v1/agent/self')).json(), 'agent/self');
    goCatalogServices((await call('GET', '/v1/catalog/services')).json(), 'catalog/services');
    goList(goCatalogService)((await call('GET', '/v1/catalog/service/shapes')).json(), 'catalog/service');
    goList(goServiceEntry)((await call('GET', '/v1/health/service/shapes')).json(), 'health/service');
    const entries = (await call('GET', '/v1/health/service/shapes')).json();
    expect(entries.map((e: any) => e.Service.Tags)).toEqual([['t'], []]);
    expect(entries[1].Service.Address).toBe(''); // registered without an address: "" as Consul echoes it
    const node = (await call('GET', '/v1/catalog/node/roster-test')).json();
    expect(Object.keys(node.Services)).toContain('shapes-1');
    expect((await call('GET', '/v1/catalog/node/other-node')).text).toBe('null');
  });
});
