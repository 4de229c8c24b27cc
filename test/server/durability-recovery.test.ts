/**
 * Recovery from damaged data dirs (issue 10): a torn tail is cut and reported (log line, metric);
 * a junk line, a flipped byte or a sequence that does not fit stop the open with the file and byte
 * offset; `recover` keeps every record before the first bad one and says what it set aside; a
 * corrupt snapshot is refused; a data dir in the old format (wal.log, snapshot.json) is migrated.
 * The CLI: `roster server` on a corrupt dir exits with one line, `--recover` serves what was kept.
 */
import { spawn } from 'node:child_process';
import { appendFile, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { Engine, type EngineOptions } from '../../src/engine/engine.js';
import { launchServer } from '../../src/server/server.js';
import { request } from '../helpers/http.js';
import { tempDir } from '../helpers/server.js';

const BIN = fileURLToPath(new URL('../../dist/cli/bin.js', import.meta.url));

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function freshDir(): Promise<string> {
  const d = await tempDir('roster-recovery');
  dirs.push(d);
  return d;
}

/** An engine whose log lines are collected. */
async function open(dir: string, opts: EngineOptions = {}): Promise<{ e: Engine; logs: string[] }> {
  const logs: string[] = [];
  const e = await Engine.open({ dataDir: dir, log: (l) => logs.push(l), ...opts });
  return { e, logs };
}

async function segments(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => /^wal-\d+\.log$/.test(f)).sort();
}

/** A dir with `n` puts (k0..k{n-1}) in one segment; returns it and the segment's path. */
async function dirWithPuts(n: number): Promise<{ dir: string; seg: string; revisions: number[] }> {
  const dir = await freshDir();
  const { e } = await open(dir);
  const revisions = [];
  for (let i = 0; i < n; i++) revisions.push((await e.put(`k${i}`, `value-${i}`)).revision);
  await e.close();
  const [seg] = await segments(dir);
  return { dir, seg: join(dir, seg!), revisions };
}

/** Byte offset where line `i` (0-based; line 0 is the segment header) starts. */
async function lineOffset(file: string, i: number): Promise<number> {
  const text = await readFile(file, 'latin1');
  let off = 0;
  for (let k = 0; k < i; k++) off = text.indexOf('\n', off) + 1;
  return off;
}

describe('torn tail', () => {
  it('is cut, logged with file and offset, and counted in /metrics; the data before it is intact', async () => {
    const { dir, seg, revisions } = await dirWithPuts(20);
    const size = (await stat(seg)).size;
    // The first bytes of a record whose write a crash cut short.
    const torn = '1c2e4f5a {"t":"put","s":21,"r":21,"k":"k20","v":"va';
    await appendFile(seg, torn);
    const { e, logs } = await open(dir);
    try {
      expect((await stat(seg)).size).toBe(size);
      expect(logs.some((l) => l.includes(`cut a torn last record at byte offset ${size} (`) && l.includes(seg.split('/').pop()!))).toBe(true);
      expect(e.stats()).toMatchObject({ tornTails: 1, tornBytes: torn.length, revision: revisions.at(-1) });
      expect((await e.list('')).items).toHaveLength(20);
      const server = await launchServer({ engine: e, port: 0 });
      const metrics = (await request(server.url, 'GET', '/metrics')).text;
      expect(metrics).toContain('roster_wal_torn_tails_total 1\n');
      expect(metrics).toContain(`roster_wal_torn_bytes_total ${torn.length}\n`);
      await server.close();
      // Writing goes on from a clean line.
      await e.put('after', 'x');
    } finally {
      await e.close();
    }
    const { e: again, logs: logs2 } = await open(dir);
    expect(logs2).toEqual([]);
    expect(again.stats().tornTails).toBe(0);
    expect((await again.get('after'))?.value).toBe('x');
    await again.close();
  });
});

describe('corruption', () => {
  it('a junk line (JSON null) at the end stops the open with file and offset; recover sets it aside', async () => {
    const { dir, seg, revisions } = await dirWithPuts(10);
    const size = (await stat(seg)).size;
    await appendFile(seg, 'null\n');
    const name = seg.split('/').pop()!;
    await expect(open(dir)).rejects.toMatchObject({
      code: 'INTERNAL',
      message: expect.stringMatching(new RegExp(`corrupt data in ${name} at byte offset ${size}: not a checksummed record; .*--recover`)),
    });
    const { e, logs } = await open(dir, { recover: true });
    expect(e.recovery?.discarded).toEqual([expect.objectContaining({ file: name, offset: size, bytes: 5, lines: 1, validRecords: 0, laterFiles: [] })]);
    expect(logs.join('\n')).toMatch(/kept every record before it, set aside 5 bytes \(1 lines, of which 0 valid records\) in .*lost\+found/);
    expect(e.revision).toBe(revisions.at(-1));
    await e.close();
    const saved = e.recovery!.discarded[0]!.savedIn;
    expect(await readFile(join(saved, name), 'utf8')).toBe('null\n');
    // Repaired for good: opens without recover.
    const { e: again } = await open(dir);
    expect((await again.list('')).items).toHaveLength(10);
    await again.close();
  });

  it('a flipped byte inside a record is refused (checksum), never replayed; recover keeps the records before it', async () => {
    const { dir, seg, revisions } = await dirWithPuts(30);
    const name = seg.split('/').pop()!;
    // Record 12 (line 12, after the header) holds "value-11": change a digit of its value.
    const at = await lineOffset(seg, 12);
    const buf = await readFile(seg);
    const digit = buf.indexOf('value-11', at) + 6;
    buf[digit] = '7'.charCodeAt(0);
    await writeFile(seg, buf);
    await expect(open(dir)).rejects.toMatchObject({ message: expect.stringContaining(`corrupt data in ${name} at byte offset ${at}: checksum mismatch`) });
    const { e } = await open(dir, { recover: true });
    try {
      // Records 1..11 kept (k0..k10); the flipped one and the 18 after it set aside, 18 of them valid.
      expect(e.revision).toBe(revisions[10]);
      expect((await e.list('')).items.map((kv) => kv.key).sort()).toEqual(Array.from({ length: 11 }, (_, i) => `k${i}`).sort());
      expect(e.recovery?.discarded[0]).toMatchObject({ file: name, offset: at, lines: 19, validRecords: 18 });
      expect(await e.get('k11')).toBeUndefined();
    } finally {
      await e.close();
    }
  });

  it('a record that does not fit the state (a sequence gap) is refused with its offset', async () => {
    const { dir, seg } = await dirWithPuts(5);
    const name = seg.split('/').pop()!;
    const lines = (await readFile(seg, 'utf8')).split('\n');
    // Drop record 3: record 4 then follows record 2.
    const at = lines.slice(0, 3).join('\n').length + 1;
    await writeFile(seg, [...lines.slice(0, 3), ...lines.slice(4)].join('\n'));
    await expect(open(dir)).rejects.toMatchObject({ message: expect.stringContaining(`corrupt data in ${name} at byte offset ${at}: record 4 where 3 was expected`) });
  });

  it('a corrupt snapshot is refused (all or nothing), naming it and the offset', async () => {
    const dir = await freshDir();
    const { e } = await open(dir, { compactBytes: 4096 });
    for (let i = 0; i < 200; i++) await e.put(`s/k${i % 40}`, `v${i}`);
    await e.close();
    const snap = (await readdir(dir)).find((f) => f.endsWith('.snap'))!;
    expect(snap).toBeDefined();
    const path = join(dir, snap);
    const buf = await readFile(path);
    const at = buf.indexOf('\n') + 1; // second line: the first entry
    buf[at + 20]! ^= 0x01;
    await writeFile(path, buf);
    for (const recover of [false, true]) {
      await expect(open(dir, { recover })).rejects.toMatchObject({
        message: expect.stringMatching(new RegExp(`corrupt data in ${snap} at byte offset ${at}: .*all or nothing`)),
      });
    }
  });
});

describe('roster server on a corrupt dir (CLI)', () => {
  function run(args: string[], untilListening: boolean): Promise<{ code: number | null; stderr: string; stdout: string }> {
    return new Promise((resolve) => {
      const c = spawn(process.execPath, [BIN, 'server', '--port', '0', '--auth', 'off', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      let stdout = '';
      c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      c.stdout.setEncoding('utf8').on('data', (d: string) => {
        stdout += d;
        if (untilListening && stdout.includes('listening on')) c.kill('SIGTERM');
      });
      const t = setTimeout(() => c.kill('SIGKILL'), 20_000);
      c.once('exit', (code) => {
        clearTimeout(t);
        resolve({ code, stderr, stdout });
      });
    });
  }

  it('refuses with one line naming file and offset; --recover serves every record before it and reports the rest', async () => {
    const { dir, seg, revisions } = await dirWithPuts(8);
    const name = seg.split('/').pop()!;
    const at = await lineOffset(seg, 5);
    const buf = await readFile(seg);
    buf[at + 30]! ^= 0x04;
    await writeFile(seg, buf);
    const refused = await run(['--data-dir', dir], false);
    expect(refused.code).toBe(1);
    expect(refused.stdout).toBe('');
    const lines = refused.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toContain(`corrupt data in ${name} at byte offset ${at}: checksum mismatch`);
    expect(lines[0]).toContain('--recover');

    const recovered = await run(['--data-dir', dir, '--recover'], true);
    expect(recovered.stdout).toContain('listening on');
    expect(recovered.stderr).toMatch(new RegExp(`recover: ${name} is corrupt at byte offset ${at} \\(checksum mismatch.*\\); kept every record before it, set aside \\d+ bytes \\(4 lines, of which 3 valid records\\)`));
    const { e } = await open(dir);
    expect(e.revision).toBe(revisions[3]);
    await e.close();
  }, 60_000);
});

describe('data dirs in the old format (wal.log + snapshot.json)', () => {
  const oldSnapshot = {
    seq: 3,
    revision: 3,
    compacted: 3,
    leases: [{ id: 'lease1', ttl: 60_000 }],
    kvs: [
      ['a', '1', 1, 1, 1, null],
      ['b', '2', 2, 3, 2, 'lease1'],
    ],
  };
  const oldLog = [
    { s: 2, o: 'put', r: 2, k: 'b', v: 'old' }, // covered by the snapshot: skipped
    { s: 4, o: 'put', r: 4, k: 'c', v: '3' },
    { s: 5, o: 'del', r: 5, k: 'a' },
    { s: 6, o: 'grant', id: 'lease2', ttl: 5000 },
    { s: 7, o: 'put', r: 6, k: 'd', v: '4', l: 'lease2' },
  ]
    .map((r) => JSON.stringify(r) + '\n')
    .join('');

  it('are read once, rewritten as a version 2 snapshot, and the old files removed', async () => {
    const dir = await freshDir();
    await writeFile(join(dir, 'snapshot.json'), JSON.stringify(oldSnapshot));
    await writeFile(join(dir, 'wal.log'), oldLog + '{"s":8,"o":"pu');
    const { e, logs } = await open(dir);
    const expectState = async (x: Engine) => {
      expect(x.revision).toBe(6);
      const items = (await x.list('')).items;
      expect(items.map((kv) => [kv.key, kv.value, kv.createRevision, kv.modRevision, kv.version, kv.session])).toEqual([
        ['b', '2', 2, 3, 2, 'lease1'],
        ['c', '3', 4, 4, 1, undefined],
        ['d', '4', 6, 6, 1, 'lease2'],
      ]);
      expect(x.leaseInfo('lease1')).toMatchObject({ ttl: 60_000, keys: 1 });
      expect(x.leaseInfo('lease2')).toMatchObject({ ttl: 5000, keys: 1 });
    };
    try {
      await expectState(e);
      expect(e.recovery).toMatchObject({ migrated: true, tornTails: [{ file: 'wal.log', bytes: 14 }] });
      expect(logs.some((l) => l.includes('migrating data dir'))).toBe(true);
      const files = (await readdir(dir)).sort();
      expect(files).not.toContain('wal.log');
      expect(files).not.toContain('snapshot.json');
      expect(files.filter((f) => f.endsWith('.snap'))).toEqual(['snap-0000000000000007.snap']);
      await e.put('e', '5');
    } finally {
      await e.close();
    }
    const { e: again } = await open(dir);
    expect(again.recovery?.migrated).toBe(false);
    expect((await again.get('e'))?.modRevision).toBe(7);
    await again.revoke('lease2');
    expect(await again.get('d')).toBeUndefined();
    await again.close();
  });

  it('old files left next to a finished migration (crash before their removal) are removed, not read', async () => {
    const dir = await freshDir();
    await writeFile(join(dir, 'snapshot.json'), JSON.stringify(oldSnapshot));
    await writeFile(join(dir, 'wal.log'), oldLog);
    const { e } = await open(dir);
    await e.close();
    // As if the process died between the new snapshot and removing the old files.
    await writeFile(join(dir, 'snapshot.json'), JSON.stringify({ ...oldSnapshot, kvs: [] }));
    await writeFile(join(dir, 'wal.log'), 'junk that must not be read\n');
    const { e: again } = await open(dir);
    expect(again.recovery?.removed.sort()).toEqual(['snapshot.json', 'wal.log']);
    expect((await again.list('')).items.map((kv) => kv.key)).toEqual(['b', 'c', 'd']);
    await again.close();
  });

  it('a junk line in an old log is refused with its offset', async () => {
    const dir = await freshDir();
    await writeFile(join(dir, 'wal.log'), '{"s":1,"o":"put","r":1,"k":"a","v":"1"}\nnull\n{"s":2,"o":"put","r":2,"k":"b","v":"2"}\n');
    await expect(open(dir)).rejects.toMatchObject({ message: expect.stringContaining('corrupt data in wal.log at byte offset 40: not a log record') });
    const { e } = await open(dir, { recover: true });
    expect((await e.list('')).items.map((kv) => kv.key)).toEqual(['a']);
    await e.close();
  });
});
