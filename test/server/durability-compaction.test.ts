/**
 * Compaction cannot lose a write (issue 10).
 *
 * - A real server process kills itself (ROSTER_FAULTS=crash@<step>) at each step of compaction:
 *   after the state is captured, after the new segment exists, with the snapshot begun, half
 *   written, fsynced, renamed, the directory fsynced, old files partly and wholly removed. After
 *   the restart every acknowledged write is there, the dir holds no leftovers, and the recovered
 *   log takes more writes and survives another restart.
 * - The reported case: 8 writers putting 32 KiB values through many compactions, then SIGTERM and
 *   a restart: nothing acknowledged is missing.
 * - Compaction bounds the files on disk, and the history survives it: after a restart a watcher
 *   resumes from before the last snapshot without a reset.
 */
import { readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { Engine } from '../../src/engine/engine.js';
import { FAULT_POINTS } from '../../src/engine/faults.js';
import { ServerProcess, tempDir } from '../helpers/server.js';

const cleanups: (() => Promise<void>)[] = [];
afterAll(async () => {
  for (const c of cleanups.reverse()) await c();
});

interface Acked {
  key: string;
  value: string;
  revision: number;
}

/** `n` writers putting fresh keys through `url` until a put fails (the server died) or `stop()`. */
async function writeUntilDown(url: string, writers: number, valueBytes: number, prefix: string, stop: () => boolean = () => false): Promise<Acked[]> {
  const b = await RemoteBackend.open(url, { connections: writers, requestTimeout: 5000 });
  const acked: Acked[] = [];
  let next = 0;
  let down = false;
  const pad = 'x'.repeat(valueBytes);
  await Promise.all(
    Array.from({ length: writers }, async () => {
      while (!down && !stop()) {
        const i = next++;
        const key = `${prefix}${String(i).padStart(6, '0')}`;
        const value = `${i}:${pad}`;
        try {
          const r = await b.put(key, value);
          acked.push({ key, value, revision: r.revision });
        } catch {
          down = true;
        }
      }
    }),
  );
  b.destroy();
  return acked;
}

async function expectAllPresent(url: string, prefix: string, acked: Acked[]): Promise<void> {
  const b = await RemoteBackend.open(url);
  try {
    const have = new Map((await b.list(prefix)).items.map((kv) => [kv.key, kv]));
    const lost = acked.filter((a) => have.get(a.key)?.modRevision !== a.revision || have.get(a.key)?.value !== a.value);
    expect(lost.map((a) => `${a.key}@${a.revision}`), `acknowledged writes lost: ${lost.length} of ${acked.length}`).toEqual([]);
  } finally {
    b.destroy();
  }
}

async function dirFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).sort();
}

describe('a crash at each step of compaction loses no acknowledged write', () => {
  for (const point of FAULT_POINTS) {
    it(`killed at ${point}`, async () => {
      const dir = await tempDir('roster-compact-crash');
      const proc = await ServerProcess.start({
        dataDir: dir,
        // The second compaction: by then there is an older snapshot and older segments to remove.
        env: { ROSTER_FAULTS: `crash@${point}#2` },
        options: { storage: { compactBytes: 8192, historyEvents: 50 } },
      });
      cleanups.push(() => proc.cleanup().then(() => rm(dir, { recursive: true, force: true })));
      const acked = await writeUntilDown(proc.url, 4, 200, 'cp/');
      const exit = await proc.waitExit();
      expect(exit.signal, `the server should have killed itself at ${point}; stderr: ${proc.stderr}`).toBe('SIGKILL');
      expect(proc.stderr).toContain(`killing the process at ${point}`);
      expect(acked.length).toBeGreaterThan(40);

      await proc.start({});
      await expectAllPresent(proc.url, 'cp/', acked);
      const files = await dirFiles(dir);
      expect(files.filter((f) => f.endsWith('.tmp'))).toEqual([]);
      expect(files.filter((f) => f.endsWith('.snap')).length).toBeLessThanOrEqual(1);
      const segs = files.filter((f) => f.startsWith('wal-'));
      expect(segs.length).toBeGreaterThanOrEqual(1);

      // The recovered log goes on: more writes (more compactions), a graceful restart, all there.
      let more = 0;
      const later = await writeUntilDown(proc.url, 4, 200, 'cp2/', () => more++ >= 150);
      await proc.kill('SIGTERM');
      await proc.start();
      await expectAllPresent(proc.url, 'cp/', acked);
      await expectAllPresent(proc.url, 'cp2/', later);
    }, 60_000);
  }
});

describe('compaction under concurrent writers', () => {
  it('8 writers, 32 KiB values, many compactions, then SIGTERM: every acknowledged write is there', async () => {
    const proc = await ServerProcess.start({ options: { storage: { compactBytes: 1024 * 1024 } } });
    cleanups.push(() => proc.cleanup());
    let n = 0;
    const acked = await writeUntilDown(proc.url, 8, 32 * 1024, 'big/', () => n++ >= 1600);
    expect(acked.length).toBe(1600);
    const metrics = await (await fetch(`${proc.url}/metrics`)).text();
    const compactions = Number(/roster_compactions_total (\d+)/.exec(metrics)![1]);
    // 52 MiB through a 1 MiB threshold: each snapshot grows with the live data, so a slow machine
    // coalesces more of them (19 on CI, ~30 here). Ten still means writes raced many compactions.
    expect(compactions).toBeGreaterThanOrEqual(10);
    await proc.kill('SIGTERM');
    await proc.start();
    await expectAllPresent(proc.url, 'big/', acked);
  }, 120_000);
});

describe('compaction bounds the files on disk and keeps history', () => {
  it('after 3,000 writes through 4 KiB segments: one snapshot, few segments; a restart keeps the history a watcher resumes from', async () => {
    const dir = await tempDir('roster-compact-bound');
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const opts = { dataDir: dir, compactBytes: 4096, historyEvents: 500, log: () => undefined };
    const e = await Engine.open(opts);
    const revisions: number[] = [];
    for (let i = 0; i < 3000; i++) revisions.push((await e.put(`h/k${i % 100}`, `v${i}`)).revision);
    const stats = e.stats();
    expect(stats.compactions).toBeGreaterThan(40);
    await e.close();
    const files = await dirFiles(dir);
    const snaps = files.filter((f) => f.endsWith('.snap'));
    const segs = files.filter((f) => f.startsWith('wal-'));
    expect(snaps).toHaveLength(1);
    // 500 events of history at ~60 bytes a record span about 8 segments of 4 KiB, plus the active one.
    expect(segs.length).toBeLessThanOrEqual(12);
    let bytes = 0;
    for (const f of files) bytes += (await stat(join(dir, f))).size;
    expect(bytes).toBeLessThan(64 * 1024);

    // After the restart the history is rebuilt from the segments kept: a resume 400 events back
    // (well before the last snapshot) gets exactly those events, no reset.
    const again = await Engine.open(opts);
    try {
      const from = revisions[3000 - 401]!;
      const sub = again.subscribe('h/', from, () => undefined);
      expect(sub.reset).toBe(false);
      expect(sub.backlog.map((ev) => ev.revision)).toEqual(revisions.slice(-400));
      expect(sub.backlog.at(-1)).toMatchObject({ type: 'put', key: 'h/k99', kv: { value: 'v2999', version: 30 } });
      sub.cancel();
      // Beyond the history: a reset, as after compaction.
      const old = again.subscribe('h/', revisions[100]!, () => undefined);
      expect(old.reset).toBe(true);
      expect(old.snapshot?.items).toHaveLength(100);
      old.cancel();
    } finally {
      await again.close();
    }
  });
});
