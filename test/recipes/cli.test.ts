/**
 * The recipe CLI commands, driven in-process over memory:// (the functions behind `roster lock` and
 * `roster elect` take an AbortSignal where the command wires SIGINT/SIGTERM). The commands run real
 * child processes.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend } from '../../src/contract/types.js';
import { MemoryBackend } from '../../src/backends/memory/index.js';
import { checkCommand, runElect, runLocked, runObserve } from '../../src/cli/commands/recipes.js';
import { Election, lock } from '../../src/recipes/index.js';
import { eventually } from '../helpers/watch.js';

const name = `cli-${process.pid}`;
let b: Backend;
let dir: string;

beforeAll(async () => {
  b = await MemoryBackend.open(`memory://${name}`);
  dir = mkdtempSync(join(tmpdir(), 'roster-cli-'));
});
afterAll(async () => {
  await b.close();
  rmSync(dir, { recursive: true, force: true });
});

const node = process.execPath;

describe('roster lock -- <command>', () => {
  it('passes the fencing token, returns the exit code, and releases the lock', async () => {
    const out = join(dir, 'token');
    const logs: string[] = [];
    const status = await runLocked(b, 'job', [node, '-e', `require('fs').writeFileSync(${JSON.stringify(out)}, process.env.ROSTER_FENCING_TOKEN); process.exit(3)`], {
      ttl: 1000,
      log: (l) => logs.push(l),
    });
    expect(status).toBe(3);
    const token = Number(readFileSync(out, 'utf8'));
    expect(token).toBeGreaterThan(0);
    expect(logs[0]).toContain(`fencing token ${token}`);
    expect((await b.list('locks/job/')).items).toEqual([]);
    // A second run gets a higher token.
    const status2 = await runLocked(b, 'job', [node, '-e', `require('fs').writeFileSync(${JSON.stringify(out)}, process.env.ROSTER_FENCING_TOKEN)`], { ttl: 1000, log: () => undefined });
    expect(status2).toBe(0);
    expect(Number(readFileSync(out, 'utf8'))).toBeGreaterThan(token);
  });

  it('waits for the holder (saying who holds it), and kills the command when the lock is lost (status 6)', async () => {
    const s = await b.session({ ttl: 1000 });
    const held = await lock(b, s, 'busy');
    const marker = join(dir, 'started');
    const logs: string[] = [];
    const run = runLocked(
      b,
      'busy',
      // The SIGTERM handler goes in before the marker that lets the test take the lock away.
      [node, '-e', `process.on('SIGTERM', () => process.exit(0)); require('fs').writeFileSync(${JSON.stringify(marker)}, 'x'); setInterval(() => {}, 1000)`],
      { ttl: 1000, log: (l) => logs.push(l), killGrace: 2000 },
    );
    await eventually(async () => (await b.list('locks/busy/')).items.length === 2, 5000, 'queued');
    await held.unlock();
    await eventually(() => logs.some((l) => l.startsWith('acquired')), 5000, 'acquired');
    await eventually(() => {
      try {
        return readFileSync(marker, 'utf8') === 'x';
      } catch {
        return false;
      }
    }, 10_000, 'command started');
    // Someone deletes the lock key: the lock is lost, the command is stopped.
    const { items } = await b.list('locks/busy/');
    await b.delete(items[0]!.key);
    expect(await run).toBe(6); // the command exited 0 on SIGTERM, but the lock was lost
    expect(logs.some((l) => l.includes('lost'))).toBe(true);
    expect(logs.some((l) => /^waiting for lock busy: held by \S+ \(fencing token \d+\)$/.test(l))).toBe(true);
    expect(logs).toContain('the command exited with status 0 after the lock was lost');
    await s.close();
  });

  it('times out waiting (exit 7) and leaves no key; a missing program is 127 before any waiting', async () => {
    const s = await b.session({ ttl: 1000 });
    const held = await lock(b, s, 'taken');
    await expect(runLocked(b, 'taken', [node, '-e', '1'], { ttl: 1000, timeout: 200, log: () => undefined })).rejects.toMatchObject({ exitCode: 7 });
    expect((await b.list('locks/taken/')).items.map((i) => i.key)).toEqual([held.key]);
    // Held or not, a command that cannot run never queues for the lock.
    await expect(runLocked(b, 'taken', ['/nonexistent/program'], { ttl: 1000, log: () => undefined })).rejects.toMatchObject({ exitCode: 127 });
    expect((await b.list('locks/taken/')).items.map((i) => i.key)).toEqual([held.key]);
    await held.unlock();
    await s.close();
  });

  it('checkCommand: 127 when missing (path or $PATH), 126 when not executable, fine when found on $PATH', () => {
    expect(() => checkCommand('/nonexistent/program')).toThrow(expect.objectContaining({ exitCode: 127 }));
    expect(() => checkCommand('no-such-program-anywhere', { PATH: '/usr/bin:/bin' })).toThrow(expect.objectContaining({ exitCode: 127 }));
    const plain = join(dir, 'plain.txt');
    writeFileSync(plain, 'not a program', { mode: 0o644 });
    expect(() => checkCommand(plain)).toThrow(expect.objectContaining({ exitCode: 126 }));
    expect(() => checkCommand('/tmp')).toThrow(expect.objectContaining({ exitCode: 126 }));
    expect(() => checkCommand('sh', { PATH: '/nonexistent:/bin:/usr/bin' })).not.toThrow();
    expect(() => checkCommand(node)).not.toThrow();
    expect(() => checkCommand(undefined)).toThrow(/needs a command after "--"/);
  });
});

describe('roster elect', () => {
  it('campaigns, prints when elected, resigns on the signal; --observe prints each leader', async () => {
    const observed: string[] = [];
    const stopObs = new AbortController();
    const obs = runObserve(b, 'leaders', { signal: stopObs.signal, print: (l) => observed.push(l), json: true });
    await eventually(() => observed.length === 1, 5000, 'vacant observed');
    const s = await b.session({ ttl: 1000 });
    const incumbent = new Election(b, s, 'leaders');
    await incumbent.campaign('first');
    const printed: string[] = [];
    const stop = new AbortController();
    const run = runElect(b, 'leaders', 'second', { ttl: 1000, signal: stop.signal, print: (l) => printed.push(l) });
    await eventually(async () => (await b.list('elections/leaders/')).items.length === 2, 5000, 'campaigning');
    expect(printed).toEqual([]);
    await incumbent.resign();
    await eventually(() => printed.length === 1, 5000, 'elected line');
    expect(printed[0]).toMatch(/^elected: leaders = second \(key elections\/leaders\/\w+, term \d+\)$/);
    stop.abort(new Error('SIGTERM'));
    expect(await run).toBe(0);
    expect((await b.list('elections/leaders/')).items).toEqual([]);
    await eventually(() => observed.length === 4, 5000, 'vacant, two leaders, vacant observed');
    expect(observed.map((l) => JSON.parse(l) as { type: string; value?: string }).map((e) => e.value ?? e.type)).toEqual(['vacant', 'first', 'second', 'vacant']);
    stopObs.abort(new Error('SIGINT'));
    await obs;
    await s.close();
  });

  it('campaigns again after its leadership is lost (the session expired), saying so', async () => {
    const logs: string[] = [];
    const printed: string[] = [];
    const stop = new AbortController();
    const run = runElect(b, 'again', 'me', { ttl: 1000, signal: stop.signal, print: (l) => printed.push(l), log: (l) => logs.push(l) });
    await eventually(() => printed.length === 1, 5000, 'elected');
    // Someone deletes the leader key: leadership is lost, the candidate campaigns again.
    const { items } = await b.list('elections/again/');
    await b.delete(items[0]!.key);
    await eventually(() => printed.length === 2, 5000, 'elected again');
    expect(logs.some((l) => /^leadership of again lost \(.*\): campaigning again$/.test(l))).toBe(true);
    stop.abort(new Error('SIGTERM'));
    expect(await run).toBe(0);
    expect((await b.list('elections/again/')).items).toEqual([]);
  });
});
