/**
 * Server operations over real HTTP (issue 13 item 4; issue 14's checker gauges):
 * - the structured log: JSON lines with time, level, event, msg for the start, a session expiry,
 *   a client error; `--log-level` filters;
 * - the registry's event history (GET /api/v1/events): a reader that comes later sees what happened
 *   before it; a long-poll is released by the next event;
 * - operator actions: DELETE / PATCH /api/v1/instances (deregister, drain) and GET /api/v1/locks;
 * - /metrics: roster_build_info, services / instances / sessions gauges, WAL bytes, checker gauges;
 * - admin compaction bounds the data dir: after heavy overwrites it shrinks to about the live data,
 *   and repeated rounds do not grow it;
 * - `roster snapshot save` (the real CLI, admin token, auth on) while writers keep writing, then
 *   `roster snapshot restore` into a fresh data dir, and a server started on it serves exactly the
 *   snapshot's keys at its revision; restore refuses a non-empty dir.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startServer, type RosterServer } from '../../src/server/index.js';
import { serverEngine } from '../../src/server/server.js';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { Registrar } from '../../src/registry/index.js';
import { lock } from '../../src/recipes/index.js';
import { Logger } from '../../src/server/log.js';
import { Proc, requireBuilt, run } from '../helpers/cli.js';
import { call, JSON_H, bearer } from '../security/helpers.js';
import { eventually } from '../helpers/watch.js';

interface LogLine {
  time: string;
  level: string;
  event: string;
  msg: string;
  [k: string]: unknown;
}

async function dirBytes(dir: string): Promise<number> {
  let n = 0;
  for (const f of await readdir(dir)) {
    const s = await stat(join(dir, f));
    if (s.isFile()) n += s.size;
  }
  return n;
}

async function json(base: string, method: string, path: string, body?: unknown, token?: string): Promise<{ status: number; body: any; text: string }> {
  const r = await call(base, method, path, { headers: { ...JSON_H, ...bearer(token) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
  return { status: r.status, body: r.json, text: r.text };
}

describe('server operations', () => {
  let dataDir: string;
  let server: RosterServer;
  let backend: RemoteBackend;
  const lines: LogLine[] = [];

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'roster-ops-'));
    const log = new Logger({ level: 'debug', format: 'json', write: (l) => lines.push(JSON.parse(l) as LogLine) }, 'info');
    server = await startServer({ port: 0, dataDir, log });
    backend = await RemoteBackend.open(server.url);
  });

  afterAll(async () => {
    await backend?.close();
    await server?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
  });

  it('logs JSON lines: start, session expiry, client error (WAL compaction: below)', async () => {
    const started = lines.find((l) => l.event === 'server.started');
    expect(started).toBeDefined();
    expect(started!.level).toBe('info');
    expect(Number.isNaN(Date.parse(started!.time))).toBe(false);
    // A session of 1 s with a key, never renewed: it expires and the log says so.
    const sess = await json(server.url, 'POST', '/api/v1/sessions', { ttl: '1s' });
    expect(sess.status).toBe(201);
    const id = sess.body.id as string;
    expect((await json(server.url, 'PUT', '/api/v1/keys/tmp/x', { value: 'v', session: id })).status).toBeLessThan(300);
    const ev = await json(server.url, 'GET', `/api/v1/events?after=0&limit=1000`);
    let after = ev.body.next as number;
    for (let i = 0; i < 10 && !lines.some((l) => l.event === 'session.expired' && l.session === id); i++) {
      const r = await json(server.url, 'GET', `/api/v1/events?after=${after}&wait=5s`);
      after = r.body.next;
    }
    const exp = lines.find((l) => l.event === 'session.expired' && l.session === id);
    expect(exp, JSON.stringify(lines.map((l) => l.event))).toBeDefined();
    expect(exp!.msg).toMatch(/expired/);
    // A client error (bad query parameter) is logged with the route and the code.
    const bad = await json(server.url, 'GET', '/api/v1/keys?nosuchparam=1');
    expect(bad.status).toBe(400);
    const ce = lines.find((l) => l.event === 'http.client_error' && /INVALID_ARGUMENT/.test(l.msg));
    expect(ce).toBeDefined();
    expect(ce!.level).toBe('info');
  });

  it('the log level filters lines (warn leaves info out)', () => {
    const got: string[] = [];
    const log = new Logger({ level: 'warn', format: 'text', write: (l) => got.push(l) }, 'info');
    log.info('x.info', 'not shown');
    log.warn('x.warn', 'shown', { a: 1 });
    expect(got).toHaveLength(1);
    expect(got[0]).toMatch(/^\S+Z WARN\s+x\.warn: shown a=1$/);
  });

  it('keeps an event history a later reader sees; deregister and drain by the API; a long-poll wakes on the next event', async () => {
    const reg = new Registrar(backend, { ttl: '10s' });
    try {
      await reg.register({ service: 'orders', id: 'o-1', address: '10.0.0.1', port: 80 });
      await reg.register({ service: 'orders', id: 'o-2', address: '10.0.0.2', port: 80 });
      // A reader that opens now (after=0) sees both registrations.
      const h = await json(server.url, 'GET', '/api/v1/events?after=0&limit=1000');
      expect(h.status).toBe(200);
      const regd = (h.body.events as { type: string; instance?: string }[]).filter((e) => e.type === 'instance.registered').map((e) => e.instance);
      expect(regd).toEqual(expect.arrayContaining(['o-1', 'o-2']));
      // A parked long-poll is released by the drain.
      const parked = json(server.url, 'GET', `/api/v1/events?after=${h.body.next}&wait=20s`);
      const t0 = performance.now();
      const d = await json(server.url, 'PATCH', '/api/v1/instances/orders/o-1', { status: 'draining' });
      expect(d.status).toBe(200);
      expect(d.body).toMatchObject({ status: 'draining', changed: true });
      const woke = await parked;
      expect(performance.now() - t0).toBeLessThan(5000);
      expect((woke.body.events as { type: string }[]).map((e) => e.type)).toContain('instance.draining');
      const kv = await backend.get('services/orders/o-1');
      expect(JSON.parse(kv!.value).status).toBe('draining');
      // Deregister on purpose: gone, and the registrar does not put it back.
      const honoured = new Promise<string>((resolve) => reg.on('deregistered', (e) => resolve(`${e.instance.id} ${e.reason}`)));
      const del = await json(server.url, 'DELETE', '/api/v1/instances/orders/o-2');
      expect(del.status).toBe(200);
      // The owning registrar saw an operator's deregistration and let it go (no repair).
      expect(await honoured).toBe('o-2 operator');
      expect(reg.instances.map((i) => i.id)).toEqual(['o-1']);
      expect(await backend.get('services/orders/o-2')).toBeUndefined();
      const after = await json(server.url, 'GET', `/api/v1/events?after=${h.body.next}`);
      const dereg = (after.body.events as { type: string; instance?: string }[]).find((e) => e.type === 'instance.deregistered' && e.instance === 'o-2');
      expect(dereg).toBeDefined();
      // A reader whose position is past this history's end (it read another, a restarted server's)
      // is answered at once from the start, told so, even without naming its epoch.
      const asked = Date.now();
      const past = await json(server.url, 'GET', `/api/v1/events?after=${Number(after.body.last) + 1000}&wait=20s`);
      expect(Date.now() - asked).toBeLessThan(5000);
      expect(past.body).toMatchObject({ restarted: true });
      expect((past.body.events as unknown[]).length).toBe(Number(after.body.last));
      // A long-poll whose client leaves is let go at once, not after its wait.
      const readersParked = async () => Number(/^roster_event_readers_parked (\d+)$/m.exec((await fetch(`${server.url}/metrics`).then((r) => r.text())))?.[1]);
      const leaving = new AbortController();
      const gone = fetch(`${server.url}/api/v1/events?after=${after.body.last}&wait=60s`, { signal: leaving.signal }).catch(() => 'aborted');
      await eventually(async () => (await readersParked()) === 1, 5000, 'the long-poll parked');
      leaving.abort();
      expect(await gone).toBe('aborted');
      await eventually(async () => (await readersParked()) === 0, 5000, 'the long-poll let go');
      // Auth off: the dashboard is told it may do everything (it shows every write button).
      const acl = await json(server.url, 'POST', '/api/v1/acl/check', { services: ['orders'], keys: ['config/a'], prefixes: [''] });
      expect(acl.body).toMatchObject({ auth: false, services: { orders: 'write' }, keys: { 'config/a': 'write' }, prefixes: { '': 'write' } });
      // Unknown instance: 404; bad status: 400.
      expect((await json(server.url, 'PATCH', '/api/v1/instances/orders/nope', { status: 'draining' })).status).toBe(404);
      expect((await json(server.url, 'PATCH', '/api/v1/instances/orders/o-1', { status: 'down' })).status).toBe(400);
      // Its own registrar's deregistration (the leaving mark and the delete in one write) is told
      // apart from an expiry and from an operator's.
      const before = await json(server.url, 'GET', '/api/v1/events?after=0&limit=1000');
      expect(await reg.deregister('o-1')).toBe(true);
      const own = await json(server.url, 'GET', `/api/v1/events?after=${before.body.next}`);
      expect((own.body.events as { type: string; instance?: string; fields?: { by?: string } }[]).find((e) => e.type === 'instance.deregistered' && e.instance === 'o-1')?.fields?.by).toBe('owner');
    } finally {
      await reg.close();
    }
  });

  it('shows locks with holder, fencing token and waiters', async () => {
    const s1 = await backend.session({ ttl: 10_000 });
    const s2 = await backend.session({ ttl: 10_000 });
    const held = await lock(backend, s1, 'nightly');
    const ac = new AbortController();
    const waiting = lock(backend, s2, 'nightly', { signal: ac.signal }).catch(() => undefined);
    try {
      let locks: any;
      for (let i = 0; i < 50; i++) {
        locks = (await json(server.url, 'GET', '/api/v1/locks')).body;
        const l = locks.locks.find((x: { name: string }) => x.name === 'nightly');
        if (l && l.waiters.length === 1) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      const l = locks.locks.find((x: { name: string }) => x.name === 'nightly');
      expect(l.holder.session).toBe(s1.id);
      expect(l.holder.createRevision).toBe(held.token);
      expect(l.waiters.map((w: { session: string }) => w.session)).toEqual([s2.id]);
    } finally {
      ac.abort();
      await waiting;
      await held.unlock();
      await s1.close();
      await s2.close();
    }
  });

  it('/metrics has build info, registry figures, WAL bytes and checker gauges', async () => {
    const reg = new Registrar(backend, { ttl: '10s' });
    try {
      await reg.register({ service: 'metrics-a', id: 'm1', address: '10.1.0.1', port: 1 });
      await reg.register({ service: 'metrics-a', id: 'm2', address: '10.1.0.2', port: 1 });
      await reg.register({ service: 'metrics-b', id: 'm3', address: '10.1.0.3', port: 1, checks: [{ ttl: '30s' }] });
      const text = (await call(server.url, 'GET', '/metrics')).text;
      const num = (name: string) => {
        const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
        if (!m) throw new Error(`${name} missing:\n${text}`);
        return Number(m[1]);
      };
      expect(text).toMatch(/^roster_build_info\{version="\d+\.\d+\.\d+[^"]*",node="v\d+[^"]*"\} 1$/m);
      const status = (await json(server.url, 'GET', '/api/v1/status')).body;
      expect(num('roster_services')).toBe(status.services);
      expect(num('roster_instances')).toBe(status.instances);
      expect(num('roster_services')).toBeGreaterThanOrEqual(2);
      expect(num('roster_instances')).toBeGreaterThanOrEqual(3);
      expect(num('roster_sessions')).toBeGreaterThanOrEqual(1);
      expect(num('roster_sessions')).toBe(num('roster_leases')); // one figure under two documented names
      expect(num('roster_wal_bytes')).toBeGreaterThan(0);
      expect(text).toMatch(/^roster_checks\{type="http",status="passing"\} \d+$/m);
      expect(text).toMatch(/^roster_check_probes_in_flight \d+$/m);
      expect(text).toMatch(/^roster_events_total\{type="instance.registered"\} [1-9]\d*$/m);
    } finally {
      await reg.close();
    }
  });

  it("/api/v1/status and /metrics each read the engine's stats once: one state, whatever the figure", async () => {
    const engine = serverEngine(server);
    const stats = engine.stats;
    let reads = 0;
    engine.stats = function (this: typeof engine) {
      reads++;
      return stats.call(this);
    };
    try {
      const status = await json(server.url, 'GET', '/api/v1/status');
      expect(status.status).toBe(200);
      expect(reads).toBe(1);
      reads = 0;
      expect((await call(server.url, 'GET', '/metrics')).status).toBe(200);
      expect(reads).toBe(1);
    } finally {
      engine.stats = stats;
    }
  });

  it('admin compaction bounds the data dir: after heavy overwrites it shrinks to about the live data, round after round', async () => {
    const value = 'x'.repeat(1000);
    const sizes: number[] = [];
    for (let round = 0; round < 3; round++) {
      const batch: Promise<unknown>[] = [];
      for (let i = 0; i < 1500; i++) batch.push(backend.put(`bulk/k${i % 20}`, `${value}${round}-${i}`));
      await Promise.all(batch);
      const before = await dirBytes(dataDir);
      expect(before).toBeGreaterThan(1_000_000);
      const r = await json(server.url, 'POST', '/api/v1/admin/compact', {});
      expect(r.status).toBe(200);
      expect(r.body.diskBytes).toBeLessThan(r.body.diskBytesBefore);
      const after = await dirBytes(dataDir);
      // 20 live keys of 1 KB and a few small ones: well under 200 KB whatever was written before.
      expect(after).toBeLessThan(200_000);
      sizes.push(after);
    }
    expect(Math.max(...sizes)).toBeLessThan(Math.min(...sizes) * 2);
    // Logged: the operator's request and the log's (WAL) own compaction, with the sizes.
    const asked = lines.filter((l) => l.event === 'admin.compaction');
    expect(asked).toHaveLength(3);
    expect(asked[2]!.diskBytes as number).toBeLessThan(asked[2]!.diskBytesBefore as number);
    expect(lines.filter((l) => l.event === 'wal.compaction').length).toBeGreaterThanOrEqual(3);
  });
});

describe('roster snapshot save / restore (real CLI, auth on)', () => {
  const ADMIN = 'snapshot-admin-token-0123456789abcdefghijklmnop';
  let dir: string;
  let server: RosterServer;
  let restored: RosterServer | undefined;

  beforeAll(async () => {
    requireBuilt();
    dir = await mkdtemp(join(tmpdir(), 'roster-snap-'));
    const { launchServer } = await import('../../src/server/server.js');
    server = await launchServer({ port: 0, dataDir: join(dir, 'data'), auth: { bootstrapToken: ADMIN }, log: { level: 'error' } });
    await writeFile(join(dir, 'admin.token'), ADMIN);
  });

  afterAll(async () => {
    await restored?.close();
    await server?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('saves a consistent snapshot while writers write, restores it into a fresh data dir, and a server there serves it', async () => {
    const put = (k: string, v: string) => call(server.url, 'PUT', `/api/v1/keys/${k}`, { headers: { ...JSON_H, ...bearer(ADMIN) }, body: JSON.stringify({ value: v }) });
    for (let i = 0; i < 300; i++) expect((await put(`cfg/k${i}`, `v${i}`)).status).toBeLessThan(300);
    // Writers keep going during the save.
    let stop = false;
    let written = 0;
    // Every acknowledged write of the writer, in order: key -> [revision, value][].
    const writes = new Map<string, [number, string][]>();
    const writer = (async () => {
      while (!stop) {
        const key = `live/w${written % 50}`;
        const value = `n${written}`;
        const r = await put(key, value);
        expect(r.status).toBeLessThan(300);
        const rev = (r.json as { revision: number }).revision;
        (writes.get(key) ?? writes.set(key, []).get(key)!).push([rev, value]);
        written++;
      }
    })();
    const file = join(dir, 'backup.snap');
    const saved = await run(['-b', server.url, '--token-file', join(dir, 'admin.token'), '-o', 'json', 'snapshot', 'save', file]);
    stop = true;
    await writer;
    expect(saved.code, saved.stderr).toBe(0);
    const s = JSON.parse(saved.stdout) as { revision: number; keys: number; sessions: number; bytes: number };
    expect(s.revision).toBeGreaterThan(300);
    expect(written).toBeGreaterThan(0);
    // No temp file left; the file is complete.
    expect((await readdir(dir)).filter((f) => f.endsWith('.part'))).toEqual([]);
    const st = await run(['-o', 'json', 'snapshot', 'status', file]);
    expect(st.code, st.stderr).toBe(0);
    expect(JSON.parse(st.stdout)).toMatchObject({ revision: s.revision, keys: s.keys });

    // Without a token: refused (exit 8, one line).
    const denied = await run(['-b', server.url, 'snapshot', 'save', join(dir, 'nope.snap')]);
    expect(denied.code).toBe(8); // denied, not merely failed
    expect(denied.stderr.trim().split('\n')).toHaveLength(1);

    // Restore into a fresh dir; a second restore over it is refused.
    const fresh = join(dir, 'restored');
    const r = await run(['-o', 'json', 'snapshot', 'restore', file, '--data-dir', fresh]);
    expect(r.code, r.stderr).toBe(0);
    const again = await run(['snapshot', 'restore', file, '--data-dir', fresh]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toMatch(/empty|exists/);

    // The restored server holds every cfg key, and the live/ keys as of the snapshot's revision.
    restored = await startServer({ port: 0, dataDir: fresh, log: { level: 'error' } });
    const list = (await json(restored.url, 'GET', '/api/v1/keys?prefix=cfg/')).body;
    expect(list.items).toHaveLength(300);
    expect(list.revision).toBeGreaterThanOrEqual(s.revision);
    // Each live/ key holds exactly the writer's last write at or below the snapshot's revision (absent
    // if it had none); a write after it must not show, one before it must not be missing.
    const live = new Map(((await json(restored.url, 'GET', '/api/v1/keys?prefix=live/')).body.items as { key: string; value: string }[]).map((k) => [k.key, k.value]));
    let before = 0;
    let after = 0;
    for (const [key, ws] of writes) {
      const upTo = ws.filter(([rev]) => rev <= s.revision);
      before += upTo.length;
      after += ws.length - upTo.length;
      expect(live.get(key), key).toBe(upTo.at(-1)?.[1]);
    }
    expect(before, 'writes before the snapshot').toBeGreaterThan(0);
    console.info(`[snapshot] writer's acknowledged writes at or below the snapshot's revision ${s.revision}: ${before}; after it: ${after}`);
    // Every key the source had at that revision, with the same value: compare with the source now
    // for keys not modified since the snapshot.
    const src = (await json(server.url, 'GET', '/api/v1/keys?prefix=', undefined, ADMIN)).body.items as { key: string; value: string; modRevision: number }[];
    const restoredAll = new Map(((await json(restored.url, 'GET', '/api/v1/keys?prefix=')).body.items as { key: string; value: string }[]).map((k) => [k.key, k.value]));
    for (const kv of src) if (kv.modRevision <= s.revision) expect(restoredAll.get(kv.key), kv.key).toBe(kv.value);
    // The same key names (nothing was deleted meanwhile); the snapshot also counts the auth store's
    // internal keys, which no listing shows.
    expect([...restoredAll.keys()].sort()).toEqual(src.map((k) => k.key).sort());
    expect(s.keys).toBeGreaterThanOrEqual(restoredAll.size);
  });
});

describe('roster server: log flags from the environment (real process)', () => {
  it('ROSTER_SERVER_LOG_FORMAT=json: JSON lines for the beyond-loopback warning, the start and the stop; a bad level is a usage error', async () => {
    requireBuilt();
    const dir = await mkdtemp(join(tmpdir(), 'roster-logflags-'));
    try {
      const p = new Proc(['server', '--port', '0', '--host', '0.0.0.0', '--auth', 'off', '--insecure', '--data-dir', join(dir, 'd')], { env: { ROSTER_SERVER_LOG_FORMAT: 'json' } });
      await p.waitStderr(/"event":"server.started"/);
      // Its last stdout line: the SIGTERM handler is installed before the first one.
      await p.waitLine((l) => l.startsWith('auth is off'));
      p.child.kill('SIGTERM');
      expect(await p.exit).toBe(0);
      const lines = p.stderr.trim().split('\n').map((l) => JSON.parse(l) as LogLine);
      expect(lines.map((l) => l.event)).toEqual(['server.insecure', 'server.started', 'server.stopping', 'server.stopped']);
      expect(lines[0]!.level).toBe('warn');
      expect(lines[0]!.msg).toMatch(/0\.0\.0\.0 without auth/);
      const bad = await run(['server', '--port', '0', '--data-dir', join(dir, 'e'), '--log-level', 'loud']);
      expect(bad.code).toBe(2);
      expect(bad.stderr.trim().split('\n')).toHaveLength(1);
      expect(bad.stderr).toMatch(/--log-level "loud": expected debug, info, warn, error/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
