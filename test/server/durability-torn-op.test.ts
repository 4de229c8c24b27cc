/**
 * One operation, several log records: a delete with lastValue (the Registrar's leaving mark: a put,
 * then a del) and a session's end (a del per key, then a revoke) each write their records in one
 * batch, but each record is its own checksummed line, so a crash or power loss in the middle of that
 * write can keep the first records and lose the rest. Replay must then drop the whole operation —
 * never leave a state no client saw (a key holding its leaving mark but still there; a session alive
 * with only some of its keys). The write is cut at each line boundary in between (and inside the
 * next line) with the engine's fault hook, then the engine is reopened from its data dir; and a
 * real server process is SIGKILLed in the middle of that write (ROSTER_FAULTS=cut-op). The format:
 * logs without the `more` field (written before it) replay as before; corruption inside an
 * operation, or an operation cut off by the end of a segment, sets the whole operation aside; so
 * does a checksum-valid record of it that does not fit the state (the whole operation is checked
 * before any of it is applied), under --recover too, in the engine and in a real server process.
 */
import { appendFile, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { KeyValue } from '../../src/core/kv.js';
import { Engine, type EngineOptions } from '../../src/engine/engine.js';
import { segmentName } from '../../src/engine/files.js';
import { CorruptDataError, FORMAT_VERSION, line } from '../../src/engine/records.js';
import { request } from '../helpers/http.js';
import { ServerProcess, tempDir } from '../helpers/server.js';

const J = { 'content-type': 'application/json' };

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

/**
 * An engine whose next log write is cut once `cutAt` is set: `cutAt(data)` says how many bytes of
 * that write reach the disk; the write then fails (EIO) and the test closes the engine, leaving the
 * files as a crash at that moment would (storageRetryMs is long: nothing repairs them meanwhile).
 */
async function openCuttable(dir: string): Promise<{ e: Engine; cutNext(at: (data: Buffer) => number): void }> {
  let cutAt: ((data: Buffer) => number) | undefined;
  const e = await Engine.open({
    dataDir: dir,
    storageRetryMs: 600_000,
    // The storage failure the cut causes is logged: expected here.
    log: () => undefined,
    faults: {
      write: (file, _bytes, data) => {
        if (!cutAt || !data || !file.endsWith('.log')) return;
        const at = cutAt(data);
        cutAt = undefined;
        return at;
      },
    },
  });
  return { e, cutNext: (at) => void (cutAt = at) };
}

/** Open the engine on `dir` again (as after a crash), run `check` on it, close it. */
async function reopened(dir: string, check: (e: Engine, logs: string[]) => Promise<void>, opts: EngineOptions = {}): Promise<void> {
  const logs: string[] = [];
  const e = await Engine.open({ dataDir: dir, log: (l) => logs.push(l), ...opts });
  try {
    await check(e, logs);
  } finally {
    await e.close();
  }
}

/** Byte offset just past the `n`-th newline of `data` (n >= 1), plus `extra` bytes into the next line. */
function afterLine(n: number, extra = 0): (data: Buffer) => number {
  return (data) => {
    let off = 0;
    for (let i = 0; i < n; i++) off = data.indexOf(10, off) + 1;
    // The cut falls inside the write, past its n-th line: at least one byte of it is lost.
    if ((n > 0 && off === 0) || off + extra >= data.length) throw new Error(`the write has no byte past line ${n} + ${extra}: ${data.toString()}`);
    return off + extra;
  };
}

async function freshDir(): Promise<string> {
  const d = await tempDir('roster-torn-op');
  dirs.push(d);
  return d;
}

/** What a key is, incarnation and session included. */
function view(kv: KeyValue | undefined) {
  return kv && { key: kv.key, value: kv.value, version: kv.version, modRevision: kv.modRevision, createRevision: kv.createRevision, session: kv.session };
}

/** A fresh data dir whose engine (cuttable) holds a session and services/a/1 bound to it. */
async function withInstance(value: string) {
  const dir = await freshDir();
  const { e, cutNext } = await openCuttable(dir);
  const s = await e.grant(60_000);
  await e.put('services/a/1', value, { lease: s.id });
  return { dir, e, cutNext, lease: s.id, before: view(await e.get('services/a/1')), rev: e.publishedRevision };
}

describe('an operation of several log records is all or nothing across a torn tail', () => {
  const cuts = [
    { name: 'after the put record, before the delete', at: afterLine(1) },
    { name: 'inside the delete record', at: afterLine(1, 20) },
    { name: 'inside the put record', at: afterLine(0, 30) },
  ];
  for (const cut of cuts) {
    it(`delete with lastValue, write cut ${cut.name}: after reopening the key is as before, never holding the leaving mark`, async () => {
      const { dir, e, cutNext, lease, before, rev: beforeRev } = await withInstance('{"id":"1"}');
      cutNext(cut.at);
      await expect(e.delete('services/a/1', { ifVersion: before!.version, lastValue: '{"id":"1","deregisteredAt":1}', lease })).rejects.toMatchObject({
        code: 'UNAVAILABLE',
      });
      await e.close();

      await reopened(dir, async (again, logs) => {
        const after = view(await again.get('services/a/1'));
        // Never the leaving mark: the put of it was never acknowledged, nor the delete.
        expect(after?.value).not.toContain('deregisteredAt');
        expect(after).toEqual(before);
        expect(again.publishedRevision).toBe(beforeRev);
        expect(again.stats().tornTails).toBe(1);
        expect(logs.some((l) => l.includes('torn'))).toBe(true);
        expect(again.leaseInfo(lease)).toBeDefined();
        // The log goes on from there: the same delete now succeeds and survives another reopen.
        const r = await again.delete('services/a/1', { ifVersion: before!.version, lastValue: '{"id":"1","deregisteredAt":2}', lease });
        expect(r).toMatchObject({ deleted: true, revision: beforeRev + 2 });
      });
      await reopened(dir, async (third, logs3) => {
        expect(logs3).toEqual([]);
        expect(await third.get('services/a/1')).toBeUndefined();
        expect(third.publishedRevision).toBe(beforeRev + 2);
        // Both events of the repeated delete are in the history: the mark, then the delete.
        const events = third.historyPage('', beforeRev)!.events.map((ev) => `${ev.type}@${ev.revision}`);
        expect(events).toEqual([`put@${beforeRev + 1}`, `delete@${beforeRev + 2}`]);
      });
    });
  }

  it('a session revoked with three keys, write cut after two of its deletes: the session and all three keys are back', async () => {
    const dir = await freshDir();
    const { e, cutNext } = await openCuttable(dir);
    const s = await e.grant(60_000);
    for (const k of ['a', 'b', 'c']) await e.put(`locks/${k}`, k, { lease: s.id });
    const other = await e.put('plain', 'p');
    const before = (await e.list('')).items.map(view);
    cutNext(afterLine(2));
    await expect(e.revoke(s.id)).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await e.close();

    await reopened(dir, async (again) => {
      expect((await again.list('')).items.map(view)).toEqual(before);
      expect(again.publishedRevision).toBe(other.revision);
      expect(again.leaseInfo(s.id)).toBeDefined();
      // The session can still end, whole.
      await again.revoke(s.id);
      expect((await again.list('')).items.map((kv) => kv.key)).toEqual(['plain']);
    });
  });

  it('a batch is separate operations: a cut inside its lastValue delete keeps the op before it and drops that delete and the ops after it', async () => {
    const { dir, e, cutNext, lease, before, rev } = await withInstance('v1');
    // Records of the batch: put x, put (mark) of services/a/1, del services/a/1, put z.
    cutNext(afterLine(2, 5));
    await expect(
      e.batch([
        { op: 'put', key: 'x', value: 'x' },
        { op: 'delete', key: 'services/a/1', ifVersion: before!.version, lastValue: 'leaving', lease },
        { op: 'put', key: 'z', value: 'z' },
      ]),
    ).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    await e.close();

    await reopened(dir, async (again) => {
      // x's record is whole and its own op: kept (never acknowledged, legitimately there or not).
      expect((await again.get('x'))?.value).toBe('x');
      expect(view(await again.get('services/a/1'))).toEqual(before);
      expect(await again.get('z')).toBeUndefined();
      expect(again.publishedRevision).toBe(rev + 1);
    });
  });
});

/** A data dir with a session `s` and the key services/a/1 bound to it; returns the segment's path
 *  and its last record (sequence `s`, revision `r`). */
async function dirWithInstance(): Promise<{ dir: string; seg: string; lease: string; before: ReturnType<typeof view>; last: { s: number; r: number } }> {
  const { dir, e, lease, before } = await withInstance('v1');
  await e.close();
  const seg = join(dir, (await readdir(dir)).find((f) => f.startsWith('wal-'))!);
  const lines = (await readFile(seg, 'utf8')).trimEnd().split('\n');
  const last = JSON.parse(lines.at(-1)!.slice(9)) as { s: number; r: number };
  return { dir, seg, lease, before, last };
}

/** The two records of a delete with lastValue of services/a/1 (version 1 -> 2), after `last`. */
function leavingRecords(last: { s: number; r: number }, lease: string, more: boolean): string[] {
  return [
    line({ t: 'put', s: last.s + 1, r: last.r + 1, k: 'services/a/1', v: 'leaving', c: last.r, n: 2, l: lease, ...(more ? { more: true } : {}) }),
    line({ t: 'del', s: last.s + 2, r: last.r + 2, k: 'services/a/1' }),
  ];
}

describe('the log format: `more` marks an operation of several records', () => {
  it('a log written before the field (no record has it) replays as before: a put alone at the tail is applied', async () => {
    const { dir, seg, lease, last } = await dirWithInstance();
    await appendFile(seg, leavingRecords(last, lease, false)[0]!);
    await reopened(dir, async (e) => {
      expect(await e.get('services/a/1')).toMatchObject({ value: 'leaving', version: 2, modRevision: last.r + 1 });
      expect(e.stats().tornTails).toBe(0);
    });
  });

  it('the same operation written with the field, both records whole, replays whole', async () => {
    const { dir, seg, lease, last } = await dirWithInstance();
    await appendFile(seg, leavingRecords(last, lease, true).join(''));
    await reopened(dir, async (e) => {
      expect(await e.get('services/a/1')).toBeUndefined();
      expect(e.publishedRevision).toBe(last.r + 2);
      expect(e.historyPage('', last.r)!.events.map((ev) => `${ev.type}@${ev.revision}`)).toEqual([`put@${last.r + 1}`, `delete@${last.r + 2}`]);
    });
  });

  it('a corrupt record inside an operation: refused naming it; recover sets the whole operation aside', async () => {
    const { dir, seg, lease, before, last } = await dirWithInstance();
    const start = (await stat(seg)).size;
    const [put, del] = leavingRecords(last, lease, true);
    // A flipped byte in the delete record: its checksum no longer matches.
    await appendFile(seg, put! + del!.replace('"del"', '"dEl"'));
    const name = seg.split('/').pop()!;
    await expect(Engine.open({ dataDir: dir, log: () => undefined })).rejects.toMatchObject({
      message: expect.stringContaining(`corrupt data in ${name} at byte offset ${start}: checksum mismatch`),
    });
    await reopened(dir, async (e) => {
      expect(e.recovery?.discarded[0]).toMatchObject({ file: name, offset: start, lines: 2, validRecords: 1 });
      expect(e.recovery?.discarded[0]?.reason).toContain(`at byte offset ${start + put!.length}, in an operation of several records`);
      expect(view(await e.get('services/a/1'))).toEqual(before);
    }, { recover: true });
  });

  it('an operation cut off by the end of a segment that is not the last is corruption, set aside whole by recover', async () => {
    const { dir, seg, lease, before, last } = await dirWithInstance();
    const start = (await stat(seg)).size;
    await appendFile(seg, leavingRecords(last, lease, true)[0]!);
    // A later segment starting where the operation's last record should have been.
    await writeFile(join(dir, segmentName(last.s + 2)), line({ t: 'segment', v: FORMAT_VERSION, first: last.s + 2 }) + line({ t: 'grant', s: last.s + 2, id: 'x', ttl: 60_000 }));
    const name = seg.split('/').pop()!;
    await expect(Engine.open({ dataDir: dir, log: () => undefined })).rejects.toMatchObject({
      message: expect.stringContaining(`corrupt data in ${name} at byte offset ${start}: an operation of several records is cut off by the end of a segment that is not the last`),
    });
    await reopened(dir, async (e) => {
      expect(e.recovery?.discarded[0]).toMatchObject({ file: name, offset: start, validRecords: 2, laterFiles: [segmentName(last.s + 2)] });
      expect(view(await e.get('services/a/1'))).toEqual(before);
      expect(e.leaseInfo('x')).toBeUndefined();
    }, { recover: true });
  });
});

describe('roster server SIGKILLed in the middle of writing a delete with lastValue (ROSTER_FAULTS=cut-op)', () => {
  const cleanups: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it('after the restart the instance is as before the deregistration, never holding the leaving mark', async () => {
    const proc = await ServerProcess.start({ env: { ROSTER_FAULTS: 'cut-op' } });
    cleanups.push(() => proc.cleanup());
    const session = (await request(proc.url, 'POST', '/api/v1/sessions', { headers: J, body: JSON.stringify({ ttl: 60_000 }) })).json as { id: string };
    const put = await request(proc.url, 'PUT', '/api/v1/keys/services/a/1', { headers: J, body: JSON.stringify({ value: '{"id":"1"}', session: session.id }) });
    expect(put.status).toBe(200);
    const before = (put.json as { kv: Record<string, unknown> }).kv;
    const exited = proc.waitExit();
    // The server writes the put of the mark, then SIGKILLs itself before the rest of the write.
    const ops = [{ op: 'delete', key: 'services/a/1', ifVersion: before.version, lastValue: '{"id":"1","deregisteredAt":1}', session: session.id }];
    await expect(request(proc.url, 'POST', '/api/v1/batch', { headers: J, body: JSON.stringify({ ops }) })).rejects.toThrow();
    expect((await exited).signal).toBe('SIGKILL');
    expect(proc.stderr).toContain('ROSTER_FAULTS: killing the process in the middle of writing');

    await proc.start({});
    const got = await request(proc.url, 'GET', '/api/v1/keys/services/a/1');
    expect(got.status).toBe(200);
    expect((got.json as { kv: unknown }).kv).toEqual(before);
    expect(proc.stderr).toContain('torn');
  });
});

/** A closed data dir with a session and `keys` bound to it; the session, the segment's path and its
 *  last record (sequence, revision). */
async function dirWith(keys: string[]): Promise<{ dir: string; seg: string; name: string; sess: string; last: { s: number; r: number } }> {
  const dir = await freshDir();
  const e = await Engine.open({ dataDir: dir, log: () => undefined });
  const { id: sess } = await e.grant(60_000);
  for (const k of keys) await e.put(k, k.split('/').pop()!, { lease: sess });
  await e.close();
  const name = (await readdir(dir)).find((f) => f.startsWith('wal-'))!;
  const seg = join(dir, name);
  const lines = (await readFile(seg, 'utf8')).trimEnd().split('\n');
  const last = JSON.parse(lines.at(-1)!.slice(9)) as { s: number; r: number };
  return { dir, seg, name, sess, last };
}

/** Append checksummed `lines` to `seg`; returns the byte offset where each starts. */
async function appendLines(seg: string, lines: string[]): Promise<number[]> {
  let at = (await stat(seg)).size;
  const offsets = lines.map((l) => {
    const o = at;
    at += Buffer.byteLength(l);
    return o;
  });
  await appendFile(seg, lines.join(''));
  return offsets;
}

describe('an operation of several records with a whole record that does not fit the state: all or nothing under --recover too', () => {
  it('a delete with lastValue whose delete does not fit (at the end of the operation): refused at the operation; recover applies none of it, keeps the records before, sets aside the rest', async () => {
    const { dir, seg, name, sess, last } = await dirWith(['services/a/1']);
    const { r, s } = last;
    // Every line checksum-valid and well-formed; the delete names a key that does not exist.
    const lines = [
      line({ t: 'put', s: s + 1, r: r + 1, k: 'before', v: 'b', c: r + 1, n: 1 }),
      line({ t: 'put', s: s + 2, r: r + 2, k: 'services/a/1', v: 'leaving', c: r, n: 2, l: sess, more: true }),
      line({ t: 'del', s: s + 3, r: r + 3, k: 'services/a/nope' }),
      line({ t: 'grant', s: s + 4, id: 'later', ttl: 60_000 }),
      line({ t: 'put', s: s + 5, r: r + 4, k: 'after', v: 'a', c: r + 4, n: 1 }),
    ];
    const [, start, del] = await appendLines(seg, lines);
    const bytes = (await stat(seg)).size - start!;

    const refused = await Engine.open({ dataDir: dir, log: () => undefined }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(refused).toBeInstanceOf(CorruptDataError);
    expect(refused).toMatchObject({ file: name, offset: start });
    expect((refused as Error).message).toContain(
      `corrupt data in ${name} at byte offset ${start}: delete of "services/a/nope", which does not exist (at byte offset ${del}, in an operation of several records that starts at ${start})`,
    );
    // The refused open changed nothing on disk.
    expect((await stat(seg)).size - start!).toBe(bytes);

    await reopened(
      dir,
      async (e, logs) => {
        // None of the operation: the key as before, never holding its leaving mark.
        expect(view(await e.get('services/a/1'))).toMatchObject({ value: '1', version: 1, modRevision: r, session: sess });
        // The record before it kept; everything after it set aside with it.
        expect((await e.get('before'))?.value).toBe('b');
        expect(await e.get('after')).toBeUndefined();
        expect(e.leaseInfo('later')).toBeUndefined();
        expect(e.publishedRevision).toBe(r + 1);
        const d = e.recovery!.discarded;
        expect(d).toEqual([expect.objectContaining({ file: name, offset: start, bytes, lines: 4, validRecords: 4, laterFiles: [] })]);
        expect(await readFile(join(d[0]!.savedIn, name), 'utf8')).toBe(lines.slice(1).join(''));
        expect(logs.some((l) => l.includes(`recover: ${name} is corrupt at byte offset ${start}`))).toBe(true);
        // The log goes on from the kept records: the same deregistration now succeeds.
        const del2 = await e.delete('services/a/1', { ifVersion: 1, lastValue: 'leaving', lease: sess });
        expect(del2).toMatchObject({ deleted: true, revision: r + 3 });
      },
      { recover: true },
    );
    // Repaired for good: opens without recover, with the state the recovered server wrote.
    await reopened(dir, async (e, logs) => {
      expect(logs).toEqual([]);
      expect(await e.get('services/a/1')).toBeUndefined();
      expect((await e.get('before'))?.value).toBe('b');
      expect(e.publishedRevision).toBe(r + 3);
    });
  });

  it('a session end whose revoke does not fit (the operation deletes only one of its two keys): none of it applied', async () => {
    const { dir, seg, sess, last } = await dirWith(['locks/a', 'locks/b']);
    const { r, s } = last;
    // The revoke fits the state the file ends with only as the delete before it leaves it: one key left.
    const [start, revoke] = await appendLines(seg, [line({ t: 'del', s: s + 1, r: r + 1, k: 'locks/a', more: true }), line({ t: 'revoke', s: s + 2, id: sess })]);
    await expect(Engine.open({ dataDir: dir, log: () => undefined })).rejects.toMatchObject({
      offset: start,
      message: expect.stringContaining(`at byte offset ${start}: revoke of session ${sess}, which still has 1 keys (at byte offset ${revoke}, in an operation`),
    });
    await reopened(
      dir,
      async (e) => {
        expect((await e.list('locks/')).items.map((kv) => [kv.key, kv.session])).toEqual([
          ['locks/a', sess],
          ['locks/b', sess],
        ]);
        expect(e.leaseInfo(sess)).toMatchObject({ keys: 2 });
        expect(e.publishedRevision).toBe(r);
        expect(e.recovery!.discarded[0]).toMatchObject({ offset: start, lines: 2, validRecords: 2 });
      },
      { recover: true },
    );
  });

  it('the same session end, deleting both keys, replays whole (each record checked against what the ones before it leave)', async () => {
    const { dir, seg, sess, last } = await dirWith(['locks/a', 'locks/b']);
    const { r, s } = last;
    await appendLines(seg, [
      line({ t: 'del', s: s + 1, r: r + 1, k: 'locks/a', more: true }),
      line({ t: 'del', s: s + 2, r: r + 2, k: 'locks/b', more: true }),
      line({ t: 'revoke', s: s + 3, id: sess }),
    ]);
    await reopened(dir, async (e, logs) => {
      expect(logs).toEqual([]);
      expect((await e.list('locks/')).items).toEqual([]);
      expect(e.leaseInfo(sess)).toBeUndefined();
      expect(e.publishedRevision).toBe(r + 2);
    });
  });

  it('roster server --recover on a session end with a record in its middle that does not fit: serves the session with all its keys, and the records before', async () => {
    const { dir, seg, name, sess, last } = await dirWith(['locks/a', 'locks/b', 'locks/c']);
    const { r, s } = last;
    const lines = [
      line({ t: 'put', s: s + 1, r: r + 1, k: 'before', v: 'b', c: r + 1, n: 1 }),
      line({ t: 'del', s: s + 2, r: r + 2, k: 'locks/a', more: true }),
      // Checksum-valid, but its revision skips one: it does not follow the delete before it.
      line({ t: 'del', s: s + 3, r: r + 4, k: 'locks/b', more: true }),
      line({ t: 'del', s: s + 4, r: r + 5, k: 'locks/c', more: true }),
      line({ t: 'revoke', s: s + 5, id: sess }),
      line({ t: 'put', s: s + 6, r: r + 6, k: 'after', v: 'a', c: r + 6, n: 1 }),
    ];
    const [, start, bad] = await appendLines(seg, lines);
    await expect(Engine.open({ dataDir: dir, log: () => undefined })).rejects.toMatchObject({
      offset: start,
      message: expect.stringContaining(`at byte offset ${start}: delete of revision ${r + 4} does not follow revision ${r + 2} (at byte offset ${bad}, in an operation`),
    });

    const proc = await ServerProcess.start({ dataDir: dir, options: { storage: { recover: true } } });
    try {
      expect(proc.stderr).toContain(`recover: ${name} is corrupt at byte offset ${start}`);
      expect(proc.stderr).toContain('set aside');
      for (const k of ['a', 'b', 'c']) {
        const got = await request(proc.url, 'GET', `/api/v1/keys/locks/${k}`);
        expect(got.status).toBe(200);
        expect((got.json as { kv: { value: string; session: string } }).kv).toMatchObject({ value: k, session: sess });
      }
      const session = await request(proc.url, 'GET', `/api/v1/sessions/${sess}`);
      expect(session.status).toBe(200);
      expect(session.json).toMatchObject({ keys: 3 });
      expect((await request(proc.url, 'GET', '/api/v1/keys/before')).status).toBe(200);
      expect((await request(proc.url, 'GET', '/api/v1/keys/after')).status).toBe(404);
    } finally {
      await proc.cleanup();
    }
    const saved = (await readdir(join(dir, 'lost+found')))[0]!;
    expect(await readFile(join(dir, 'lost+found', saved, name), 'utf8')).toBe(lines.slice(1).join(''));
  }, 60_000);
});
