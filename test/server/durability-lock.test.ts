/**
 * One writer per data dir (issue 10): a second server on the same dir refuses to start with one
 * line naming the holder, with real processes; a lock left by kill -9 does not block a restart; and
 * the first server's acknowledged writes are intact afterwards.
 */
import { spawn } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { Engine } from '../../src/engine/engine.js';
import { lockDataDir } from '../../src/engine/lock.js';
import { hostname } from 'node:os';
import { writeFile } from 'node:fs/promises';
import { ServerProcess, tempDir } from '../helpers/server.js';

const BIN = fileURLToPath(new URL('../../dist/cli/bin.js', import.meta.url));

/** Run `roster server` on `dir` until it exits; its exit code and stderr. */
function runServer(dir: string, port: number): Promise<{ code: number | null; stderr: string; stdout: string }> {
  return new Promise((resolve, reject) => {
    const c = spawn(process.execPath, [BIN, 'server', '--port', String(port), '--data-dir', dir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    let stdout = '';
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    c.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
      // Started after all (the test fails below): stop it rather than leave it running.
      if (stdout.includes('listening on')) c.kill('SIGTERM');
    });
    const t = setTimeout(() => c.kill('SIGKILL'), 20_000);
    c.once('error', reject);
    c.once('exit', (code) => {
      clearTimeout(t);
      resolve({ code, stderr, stdout });
    });
  });
}

describe('one writer per data dir', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('a second server refuses with one line naming the holder; after kill -9 the dir opens again with every acknowledged write', async () => {
    const dir = await tempDir('roster-lock');
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const first = await ServerProcess.start({ dataDir: dir });
    cleanups.push(() => first.cleanup());
    const b = await RemoteBackend.open(first.url);
    const acked = [];
    for (let i = 0; i < 50; i++) acked.push(await b.put(`lock/k${i}`, `v${i}`));
    b.destroy();

    const second = await runServer(dir, 0);
    expect(second.stdout).not.toContain('listening on');
    expect(second.code).toBe(3); // UNAVAILABLE in the CLI's exit-code table (docs/cli.md)
    const lines = second.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`data dir ${dir} is in use by roster server pid ${first.pid}`);
    expect(lines[0]).toMatch(/UNAVAILABLE/);

    // The first server still serves, unharmed by the attempt.
    const still = await RemoteBackend.open(first.url);
    expect((await still.get('lock/k49'))?.value).toBe('v49');
    still.destroy();

    // kill -9 leaves the LOCK file behind; it does not block the next server.
    await first.kill('SIGKILL');
    await first.start();
    const after = await RemoteBackend.open(first.url);
    const list = await after.list('lock/');
    expect(list.items.map((kv) => kv.modRevision).sort((x, y) => x - y)).toEqual(acked.map((r) => r.revision));
    after.destroy();
  }, 60_000);

  it('in one process too: a second Engine.open on an open dir fails, and succeeds once the first is closed', async () => {
    const dir = await tempDir('roster-lock-inproc');
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const a = await Engine.open({ dataDir: dir });
    await a.put('k', 'v');
    await expect(Engine.open({ dataDir: dir })).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining(`roster server pid ${process.pid}`) });
    // The same dir through another path (a trailing slash, a relative form) is the same lock.
    await expect(Engine.open({ dataDir: join(dir, '.') })).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await a.close();
    const b = await Engine.open({ dataDir: dir });
    expect((await b.get('k'))?.value).toBe('v');
    b.destroy();
    // destroy() gives the dir up once its flush is done.
    await expect.poll(async () => Engine.open({ dataDir: dir }).then((e) => e.close().then(() => true), () => false), { timeout: 5000 }).toBe(true);
  });

  it('the LOCK-file fallback (no abstract sockets): refuses a live holder, takes over from a dead one', async () => {
    const dir = await tempDir('roster-lock-file');
    cleanups.push(() => rm(dir, { recursive: true, force: true }));
    const mine = await lockDataDir(dir, 'file');
    await expect(lockDataDir(dir, 'file')).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringContaining(`roster server pid ${process.pid}`) });
    mine.release();
    // Left behind by a process that no longer runs: taken over.
    const dead = spawn(process.execPath, ['-e', '']);
    await new Promise((r) => dead.once('exit', r));
    await writeFile(join(dir, 'LOCK'), JSON.stringify({ pid: dead.pid, host: hostname(), startedAt: 'then', argv: [] }));
    const taken = await lockDataDir(dir, 'file');
    taken.release();
    // Held by a live process (this test's parent): refused, naming it.
    await writeFile(join(dir, 'LOCK'), JSON.stringify({ pid: process.ppid, host: hostname(), startedAt: 'now', argv: [] }));
    await expect(lockDataDir(dir, 'file')).rejects.toMatchObject({ message: expect.stringContaining(`roster server pid ${process.ppid}`) });
  });
});
