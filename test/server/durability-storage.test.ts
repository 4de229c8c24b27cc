/**
 * A full or failing disk (issue 10): writes are refused with UNAVAILABLE naming the storage error,
 * /healthz fails, reads and keepalives go on and no session expires; once the disk takes writes
 * again the server resumes by itself, without a restart, with every acknowledged write and nothing
 * that was refused. Injected (ENOSPC on write, EIO on fsync) and, as root, on a real 4 MiB tmpfs.
 */
import { execFileSync } from 'node:child_process';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { WatchEvent } from '../../src/core/kv.js';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { Engine } from '../../src/engine/engine.js';
import { errnoError } from '../../src/engine/faults.js';
import { launchServer } from '../../src/server/server.js';
import { request } from '../helpers/http.js';
import { ServerProcess, tempDir } from '../helpers/server.js';
import { eventually } from '../helpers/watch.js';

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

const JSON_HEADERS = { 'content-type': 'application/json' };
const put = (url: string, key: string, value: string) => request(url, 'PUT', `/api/v1/keys/${key}`, { headers: JSON_HEADERS, body: JSON.stringify({ value }) });

describe('storage failure (injected)', () => {
  it('ENOSPC: writes refused, /healthz fails, reads, keepalives and sessions go on; resumes by itself when space returns', async () => {
    const dir = await tempDir('roster-enospc');
    let full = false;
    const logs: string[] = [];
    const engine = await Engine.open({
      dataDir: dir,
      storageRetryMs: 50,
      log: (l) => logs.push(l),
      faults: {
        write: () => {
          if (full) throw errnoError('ENOSPC');
        },
      },
    });
    const server = await launchServer({ engine, port: 0 });
    const b = await RemoteBackend.open(server.url, { reconnectBaseMs: 20, reconnectCapMs: 100 });
    cleanups.push(async () => {
      b.destroy();
      await server.close();
      await engine.close();
      await rm(dir, { recursive: true, force: true });
    });
    const seen: WatchEvent[] = [];
    const watch = b.watch('s/');
    void (async () => {
      try {
        for await (const ev of watch) seen.push(ev);
      } catch {
        // ended by the cleanup
      }
    })();
    await eventually(() => seen.some((e) => e.type === 'synced'), 5000, 'watch synced');
    const acked: number[] = [];
    for (let i = 0; i < 20; i++) acked.push((await b.put(`s/k${i}`, `v${i}`)).revision);
    // A session that nobody keeps alive, with a key, and one that is kept alive.
    const idle = await engine.grant(500);
    await engine.put('s/idle', 'i', { lease: idle.id });
    const kept = await engine.grant(500);
    acked.push((await b.get('s/idle'))!.modRevision);

    full = true;
    const refused = await put(server.url, 's/refused', 'no');
    expect(refused.status).toBe(503);
    expect(refused.json).toMatchObject({ error: { code: 'UNAVAILABLE', details: { storage: 'ENOSPC' }, message: expect.stringContaining('storage unavailable: ENOSPC') } });
    // Every later write is refused at once with the same error, without touching the disk.
    const again = await put(server.url, 's/k0', 'no');
    expect(again.status).toBe(503);
    expect((again.json as { error: { details: unknown } }).error.details).toEqual({ storage: 'ENOSPC' });
    const health = await request(server.url, 'GET', '/healthz');
    expect(health.status).toBe(503);
    expect(health.text).toContain('ENOSPC');
    expect((await request(server.url, 'GET', '/metrics')).text).toContain('roster_storage_available 0\n');
    expect(logs.some((l) => l.includes('storage unavailable: ENOSPC') && l.includes('checking the disk every 50 ms'))).toBe(true);
    // Reads and keepalives are served; the refused write is not visible.
    expect((await request(server.url, 'GET', '/api/v1/keys/s/k3')).status).toBe(200);
    expect((await request(server.url, 'GET', '/api/v1/keys/s/refused')).status).toBe(404);
    const deadline = Date.now() + 1200;
    while (Date.now() < deadline) {
      expect((await request(server.url, 'POST', `/api/v1/sessions/${kept.id}/keepalive`, { headers: { 'x-roster-request': '1' } })).status).toBe(200);
      await new Promise((r) => setTimeout(r, 100));
    }
    // Past its TTL (500 ms) the idle session still holds its key: nothing can be deleted durably now.
    expect(engine.leaseInfo(idle.id)).toBeDefined();
    expect((await b.get('s/idle'))?.value).toBe('i');

    full = false;
    await eventually(async () => (await request(server.url, 'GET', '/healthz')).status === 200, 5000, '/healthz ok again');
    expect(logs.some((l) => l.includes('storage accepts writes again'))).toBe(true);
    acked.push((await b.put('s/after', 'ok')).revision);
    // The idle session expires now that its delete can be made durable.
    await eventually(async () => (await b.get('s/idle')) === undefined, 5000, 'idle session expired');
    expect(engine.leaseInfo(kept.id)).toBeDefined();
    const changes = () => seen.filter((e) => e.type === 'put' || e.type === 'delete');
    await eventually(() => changes().length === acked.length + 1, 5000, 'watcher caught up');
    // Every acknowledged write once, in order, plus the expiry (before or after s/after), no gap;
    // never the refused writes.
    const cs = changes();
    const revs = cs.map((e) => e.revision);
    expect(revs).toEqual(Array.from({ length: revs.length }, (_, i) => revs[0]! + i));
    const expiry = (e: WatchEvent) => e.type === 'delete' && e.key === 's/idle';
    expect(cs.filter(expiry)).toHaveLength(1);
    expect(cs.filter((e) => !expiry(e)).map((e) => e.revision)).toEqual(acked);
    expect(cs.some((e) => e.key === 's/refused')).toBe(false);
    expect(engine.stats()).toMatchObject({ storageFailures: 1, storageAvailable: true });

    // A restart reads exactly that.
    watch.close();
    await server.close();
    await engine.close();
    const reopened = await Engine.open({ dataDir: dir, log: () => undefined });
    const keys = (await reopened.list('s/')).items.map((kv) => kv.key);
    expect(keys).toContain('s/after');
    expect(keys).not.toContain('s/refused');
    expect(keys).not.toContain('s/idle');
    expect(keys).toHaveLength(21);
    await reopened.close();
  });

  it('EIO on fsync: the batch is refused and never becomes visible; the next write after recovery is durable', async () => {
    const dir = await tempDir('roster-eio');
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    let failSync = false;
    const e = await Engine.open({
      dataDir: dir,
      storageRetryMs: 20,
      log: () => undefined,
      faults: {
        sync: (file) => {
          if (failSync && file.endsWith('.log')) throw errnoError('EIO', 'fdatasync');
        },
      },
    });
    const first = await e.put('k', 'durable');
    const events: string[] = [];
    const sub = e.subscribe('', undefined, (ev) => events.push(`${ev.type}:${ev.key}@${ev.revision}`));
    failSync = true;
    await expect(e.put('k', 'lost')).rejects.toMatchObject({ code: 'UNAVAILABLE', details: { storage: 'EIO' } });
    await expect(e.put('other', 'x')).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    expect((await e.get('k'))?.value).toBe('durable');
    expect(e.health()).toMatchObject({ ok: false, reason: expect.stringContaining('EIO') });
    failSync = false;
    await eventually(() => e.health().ok, 5000, 'storage resumed');
    // The revision the refused write had taken is reused: it never existed for anyone.
    const next = await e.put('k', 'after');
    expect(next.revision).toBe(first.revision + 1);
    expect(events).toEqual([`put:k@${next.revision}`]);
    sub.cancel();
    await e.close();
    const reopened = await Engine.open({ dataDir: dir, log: () => undefined });
    expect(await reopened.get('k')).toMatchObject({ value: 'after', version: 2, modRevision: next.revision });
    expect(await reopened.get('other')).toBeUndefined();
    await reopened.close();
  });
});

const isRoot = process.getuid?.() === 0;

describe.skipIf(!isRoot)('a real full disk (4 MiB tmpfs; needs root)', () => {
  it('writes fail with ENOSPC, /healthz fails; after space is freed the server resumes by itself and loses nothing', async () => {
    const mnt = await tempDir('roster-tmpfs');
    try {
      execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mnt]);
    } catch (e) {
      await rm(mnt, { recursive: true, force: true });
      console.log(`tmpfs test skipped: cannot mount (${(e as Error).message.split('\n')[0]})`);
      return;
    }
    cleanups.push(async () => {
      execFileSync('umount', ['-l', mnt]);
      await rm(mnt, { recursive: true, force: true });
    });
    const dataDir = join(mnt, 'data');
    await mkdir(dataDir);
    // Take most of the space, so the log fills the rest quickly.
    await writeFile(join(mnt, 'filler'), Buffer.alloc(2 * 1024 * 1024));
    const proc = await ServerProcess.start({ dataDir, options: { storage: { compactBytes: 512 * 1024, storageRetryMs: 100 } } });
    cleanups.push(() => proc.cleanup());
    const value = 'v'.repeat(16 * 1024);
    const acked = new Map<string, number>();
    let refused: { status: number; json: unknown } | undefined;
    for (let i = 0; i < 1000 && !refused; i++) {
      const r = await put(proc.url, `t/k${i}`, value);
      if (r.status === 200) acked.set(`t/k${i}`, (r.json as { revision: number }).revision);
      else refused = r;
    }
    expect(refused, 'the disk never filled').toBeDefined();
    expect(refused!.status).toBe(503);
    expect(refused!.json).toMatchObject({ error: { code: 'UNAVAILABLE', details: { storage: 'ENOSPC' } } });
    expect((await request(proc.url, 'GET', '/healthz')).status).toBe(503);
    expect((await put(proc.url, 't/again', 'x')).status).toBe(503);

    await rm(join(mnt, 'filler'));
    await eventually(async () => (await request(proc.url, 'GET', '/healthz')).status === 200, 10_000, '/healthz ok after freeing space');
    const after = await put(proc.url, 't/after', value);
    expect(after.status).toBe(200);
    acked.set('t/after', (after.json as { revision: number }).revision);

    await proc.kill('SIGTERM');
    await proc.start();
    const b = await RemoteBackend.open(proc.url);
    const have = new Map((await b.list('t/')).items.map((kv) => [kv.key, kv.modRevision]));
    b.destroy();
    expect([...acked].filter(([k, r]) => have.get(k) !== r)).toEqual([]);
    expect(have.size).toBe(acked.size);
    console.log(`tmpfs: ${acked.size - 1} writes of 16 KiB acknowledged before ENOSPC, resumed after freeing 2 MiB, 0 lost`);
  }, 60_000);
});
