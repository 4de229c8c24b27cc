import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fsyncDir, listDataDir, scanLines } from './files.js';
import { loadLegacy, removeLegacy, type LegacyTarget } from './legacy.js';
import type { EngineLog } from './options.js';
import { asLogRecord, asSegmentHeader, CorruptDataError, decodeLine, type LogRecord } from './records.js';
import { readSnapshot, type SnapshotVisitor } from './snapshot.js';
import type { Discarded, RecoveryReport } from './types.js';
import type { SegmentInfo } from './wal.js';

/**
 * Opening a data dir: the newest snapshot, then every log segment in order, each record checked
 * (checksum, shape, sequence, fit with the state: records.ts, state.ts).
 *
 * - A torn tail (bytes after the last newline of the last segment: a write a crash cut short, never
 *   acknowledged, since acknowledgement waits for the whole batch's fsync) is cut off and reported.
 *   An operation of several records (records.ts: every record but its last has `more`) is applied
 *   only once its last record is read, and only once all its records are checked to fit the state
 *   in turn (state.ts: groupMisfit): one the tail cut short is cut off whole with the tail, so
 *   replay never keeps a part of an operation (a key with its leaving mark but not deleted).
 *   The log never holds such an operation across segments (it is written in one batch, and
 *   compaction starts a new segment only between batches), so one cut off by the end of a segment
 *   that is not the last is corruption.
 * - Anything else that does not check out stops the open with a CorruptDataError naming the file and
 *   the byte offset; nothing after it is applied. With `recover`, every record before it is kept,
 *   and the rest (the remainder of that segment and every later segment) is moved to
 *   lost+found/<time>/ and reported: how many bytes, lines and valid records were set aside.
 *   A bad record inside an operation of several records (a bad line, a sequence gap, or a whole
 *   record that does not fit the state) counts from the operation's first record: the error names
 *   that offset (and the bad record's), nothing of the operation is applied, and `recover` sets it
 *   aside whole with the rest.
 * - A data dir in the format before version 2 (wal.log, snapshot.json) is read once; the engine
 *   then writes it as a version 2 snapshot and removes the old files (migrated: true).
 */

export interface ReplayTarget {
  snapshot: SnapshotVisitor;
  /** A record at or below the snapshot's sequence (for history only). */
  covered(rec: LogRecord): void;
  /** Records before the snapshot skip a sequence: history gathered so far is unusable. */
  coveredGap(): void;
  /** A record after the snapshot; returns why it does not fit the state, if it does not (then
   *  nothing of it is applied). */
  apply(rec: LogRecord): string | undefined;
  /** The records of one operation, after the snapshot: whether they would all fit, applied in turn
   *  (the index of the first that does not, and why); nothing is applied. */
  groupMisfit(recs: readonly LogRecord[]): { index: number; reason: string } | undefined;
  finish(snapshotSeq: number, lastHistorySeq: number, snapshotRevision: number): void;
  legacy: LegacyTarget;
}

export type { Discarded, RecoveryReport } from './types.js';

export interface LoadOptions {
  recover: boolean;
  log: EngineLog;
}

export interface LoadedLog {
  /** Sequence number of the last record (or of the snapshot, if no record follows it). */
  seq: number;
  snapshot: { file: string; seq: number; bytes: number } | undefined;
  segments: SegmentInfo[];
  report: RecoveryReport;
}

export async function loadDataDir(dir: string, target: ReplayTarget, opts: LoadOptions): Promise<LoadedLog> {
  const report: RecoveryReport = { tornTails: [], discarded: [], removed: [], migrated: false };
  const listing = await listDataDir(dir);
  for (const t of listing.tmp) {
    await unlink(join(dir, t));
    report.removed.push(t);
  }
  const legacy = listing.legacyLog || listing.legacySnapshot;
  if (legacy && listing.segments.length === 0 && listing.snapshots.length === 0) {
    const seq = await loadLegacy(dir, target.legacy, opts, (file, offset, reason) => setAside(dir, file, offset, reason, [], report, opts), report);
    report.migrated = true;
    return { seq, snapshot: undefined, segments: [], report };
  }
  // Old files next to new ones: a migration wrote its snapshot and stopped before removing them.
  if (legacy) report.removed.push(...(await removeLegacy(dir)));

  let snapSeq = 0;
  let snapRev = 0;
  let snapshot: LoadedLog['snapshot'];
  const newest = listing.snapshots.at(-1);
  if (newest) {
    let h;
    try {
      h = await readSnapshot(dir, newest.file, target.snapshot);
    } catch (e) {
      if (!(e instanceof CorruptDataError)) throw e;
      throw new CorruptDataError(e.file, e.offset, e.reason, `; a snapshot is all or nothing and --recover cannot repair it: restore ${dir} from a backup`);
    }
    if (h.s !== newest.seq) throw new CorruptDataError(newest.file, 0, `header says sequence ${h.s}, the file name ${newest.seq}`);
    snapSeq = h.s;
    snapRev = h.r;
    snapshot = { file: newest.file, seq: h.s, bytes: (await stat(join(dir, newest.file))).size };
    for (const s of listing.snapshots.slice(0, -1)) {
      await unlink(join(dir, s.file));
      report.removed.push(s.file);
    }
  }

  const segments: SegmentInfo[] = [];
  let lastSeq = snapSeq;
  let lastHistorySeq = 0;
  let prevLast: number | undefined;
  for (let i = 0; i < listing.segments.length; i++) {
    const seg = listing.segments[i]!;
    const isLast = i === listing.segments.length - 1;
    const path = join(dir, seg.file);
    const info: SegmentInfo = { file: seg.file, first: seg.first, last: seg.first - 1, maxRev: 0, size: 0, durableSize: 0 };
    if (prevLast !== undefined && seg.first !== prevLast + 1 && seg.first <= snapSeq) target.coveredGap();
    let headerSeen = false;
    let bad: { offset: number; reason: string } | undefined;
    /** The records read of an operation whose last record is not read yet, with their offsets. */
    const group: { rec: LogRecord; offset: number }[] = [];
    const stop = (offset: number, reason: string): false => {
      bad = { offset, reason };
      return false;
    };
    /** Why record `s`, after the snapshot, cannot be the next one applied, if it cannot. */
    const notNext = (s: number): string | undefined =>
      s === lastSeq + 1 ? undefined : `record ${s} does not follow record ${lastSeq} (where the snapshot or the previous segment ends)`;
    /** Apply a record (or, one the snapshot covers, keep it for history); false if it does not fit. */
    const take = (rec: LogRecord, offset: number): false | undefined => {
      if (rec.s <= snapSeq) {
        target.covered(rec);
        lastHistorySeq = rec.s;
      } else {
        const gap = notNext(rec.s);
        if (gap !== undefined) return stop(offset, gap);
        const why = target.apply(rec);
        if (why !== undefined) return stop(offset, why);
        lastSeq = rec.s;
      }
      info.last = rec.s;
      if ((rec.t === 'put' || rec.t === 'del') && rec.r > info.maxRev) info.maxRev = rec.r;
      return undefined;
    };
    const res = await scanLines(path, (buf, start, end, offset) => {
      const d = decodeLine(buf, start, end);
      if (!d.ok) return stop(offset, d.reason);
      if (!headerSeen) {
        const h = asSegmentHeader(d.value);
        if (typeof h === 'string') return stop(offset, h);
        if (h.first !== seg.first) return stop(offset, `segment header says it starts at sequence ${h.first}, its name at ${seg.first}`);
        headerSeen = true;
        return;
      }
      const rec = asLogRecord(d.value);
      if (typeof rec === 'string') return stop(offset, rec);
      const expected = info.last + 1 + group.length;
      if (rec.s !== expected) return stop(offset, `record ${rec.s} where ${expected} was expected`);
      if (group.length === 0 && !rec.more) return take(rec, offset);
      // An operation of several records (records.ts: `more`) is applied once its last one is read,
      // and only if every one of its records fits: nothing of it is applied otherwise.
      group.push({ rec, offset });
      if (rec.more) return;
      // Its records after the snapshot are checked together first (state.ts: groupMisfit), each
      // against the state as the ones before it would leave it; one that does not fit sets the
      // whole operation aside, from its first record.
      const first = group[0]!.offset;
      const after = group.findIndex((g) => g.rec.s > snapSeq);
      if (after >= 0) {
        const gap = notNext(group[after]!.rec.s);
        if (gap !== undefined) return stop(first, inOperation(gap, group[after]!.offset, first));
        const misfit = target.groupMisfit(group.slice(after).map((g) => g.rec));
        if (misfit) return stop(first, inOperation(misfit.reason, group[after + misfit.index]!.offset, first));
      }
      for (const g of group.splice(0)) if (take(g.rec, g.offset) === false) return false;
    });
    // Where the records applied end: before an operation that is not complete (its first records
    // were read, its last was not), else after the last whole line.
    const unfinished = group[0]?.offset;
    let end = unfinished ?? res.end;
    if (bad && unfinished !== undefined && bad.offset > unfinished) {
      // A bad line inside an operation: nothing of an operation is kept unless all of it is, so
      // it is set aside from its first record.
      bad = { offset: unfinished, reason: inOperation(bad.reason, bad.offset, unfinished) };
    }
    if (!bad && end < res.size) {
      if (isLast) {
        await truncateDurably(path, end);
        const bytes = res.size - end;
        report.tornTails.push({ file: seg.file, offset: end, bytes });
        const what =
          unfinished === undefined
            ? `a torn last record at byte offset ${end} (${bytes} bytes)`
            : `an unfinished last operation at byte offset ${end} (${bytes} bytes: ${group.length} of its records, the rest torn or never written)`;
        opts.log(`${seg.file}: cut ${what}: a write interrupted by a crash, never acknowledged`, 'torn-tail', { file: seg.file, offset: end, bytes });
      } else {
        bad = {
          offset: end,
          reason: unfinished === undefined ? 'unterminated record at the end of a segment that is not the last' : 'an operation of several records is cut off by the end of a segment that is not the last',
        };
      }
    }
    if (bad) {
      if (!opts.recover) {
        throw new CorruptDataError(
          seg.file,
          bad.offset,
          bad.reason,
          `; nothing from there on was applied. \`roster server --recover --data-dir ${dir}\` keeps every record before it and moves the rest to ${join(dir, 'lost+found')}`,
        );
      }
      const later = listing.segments.slice(i + 1).map((s) => s.file);
      await setAside(dir, seg.file, bad.offset, bad.reason, later, report, opts);
      end = bad.offset;
    }
    info.size = info.durableSize = end;
    if (end === 0 && !isLast && !bad) {
      // Never written to: not part of the sequence.
      await unlink(path);
      report.removed.push(seg.file);
      continue;
    }
    segments.push(info);
    if (info.last >= info.first) prevLast = info.last;
    if (bad) break;
  }
  target.finish(snapSeq, lastHistorySeq, snapRev);
  return { seq: lastSeq, snapshot, segments, report };
}

/** The reason for a bad record at `offset` in an operation of several records that starts at `start`. */
function inOperation(reason: string, offset: number, start: number): string {
  return `${reason} (at byte offset ${offset}, in an operation of several records that starts at ${start})`;
}

/** --recover: move bytes from `offset` of `file`, and the `later` files, to lost+found; cut `file` there. */
async function setAside(dir: string, file: string, offset: number, reason: string, later: string[], report: RecoveryReport, opts: LoadOptions): Promise<void> {
  const savedIn = join(dir, 'lost+found', new Date().toISOString().replace(/[:.]/g, '-'));
  await mkdir(savedIn, { recursive: true });
  const path = join(dir, file);
  await pipeline(createReadStream(path, { start: offset }), createWriteStream(join(savedIn, file)));
  for (const f of later) await rename(join(dir, f), join(savedIn, f));
  await truncateDurably(path, offset);
  await fsyncDir(dir);
  const d: Discarded = { file, offset, reason, bytes: 0, lines: 0, validRecords: 0, laterFiles: later, savedIn };
  for (const f of [file, ...later]) {
    const r = await scanLines(join(savedIn, f), (buf, start, end) => {
      d.lines++;
      const v = decodeLine(buf, start, end);
      if (v.ok && typeof asLogRecord(v.value) !== 'string') d.validRecords++;
    });
    d.bytes += r.size;
    if (r.end < r.size) d.lines++;
  }
  report.discarded.push(d);
  opts.log(
    `recover: ${file} is corrupt at byte offset ${offset} (${reason}); kept every record before it, ` +
      `set aside ${d.bytes} bytes (${d.lines} lines, of which ${d.validRecords} valid records${later.length ? `, including ${later.length} later segment file(s)` : ''}) in ${savedIn}`,
    'recovered',
    { file, offset, reason, bytes: d.bytes, validRecords: d.validRecords, savedIn },
  );
}

async function truncateDurably(path: string, size: number): Promise<void> {
  const fh = await open(path, 'r+');
  try {
    await fh.truncate(size);
    await fh.datasync();
  } finally {
    await fh.close();
  }
}
