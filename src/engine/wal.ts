import { close as closeCb, fdatasync as fdatasyncCb, fdatasyncSync, openSync, writeSync } from 'node:fs';
import { promisify } from 'node:util';
import { open, stat, truncate, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { UnavailableError } from '../core/errors.js';
import { errnoError, type StorageFaults } from './faults.js';
import { deferred, type Deferred } from '../core/async.js';
import { fsyncDir, listDataDir, segmentName } from './files.js';
import type { EngineLog } from './options.js';
import { delJson, encodeBatch, FORMAT_VERSION, grantJson, putJson, revokeJson, type RecordText } from './records.js';
import { writeSnapshot, type SnapshotCapture } from './snapshot.js';

/**
 * The write-ahead log: segments of checksummed records (records.ts), group commit, and compaction
 * into snapshots that can lose nothing.
 *
 * Durability contract: `sync()` resolves only after every record appended before the call is
 * written and fdatasync'ed (and the directory entry of its segment fsync'ed). The engine
 * acknowledges a write, and publishes its watch event, only after that.
 *
 * Group commit: records appended while a batch is being fsync'ed form the next batch; one write and
 * one fdatasync commit a whole batch. The write goes to the page cache from the event loop (it saves
 * a round trip through the thread pool). The fdatasync, which waits for the disk, runs in the thread
 * pool while writes keep coming (so the event loop parses the next batch meanwhile), but inline
 * when the log is idle and the disk is fast (see `inlineSync`): a lone write then costs no thread
 * hand-offs, and the thread that publishes its event is not one the pool has just woken. (On a
 * small VM that matters: measured on 2 vCPUs, the first watch stream written by a thread the pool
 * woke ran its reader on that vCPU before the server wrote the next stream, so the watcher
 * processes saw the event one after another; bench/NOTES.md.)
 *
 * Compaction, which never rewrites or truncates a segment:
 *   1. when the active segment passes `compactBytes`, right after a batch is written and before any
 *      further record is appended, the state is captured (it is then exactly the state after that
 *      batch's last record, seq X) and a new segment `wal-<X+1>.log` is started; later records go
 *      there and are acknowledged by its own fsyncs, so writers never wait for a snapshot;
 *   2. once the old segment is fsync'ed, the capture is written as `snap-<X>.snap` in the background
 *      (tmp, fdatasync, rename, directory fsync: snapshot.ts);
 *   3. then older snapshots are removed, and so are the oldest segments that lie wholly at or below X
 *      and hold no event the in-memory history still serves (they rebuild it after a restart).
 * `compactNow()` (the admin endpoint, migration) does the same on request: at the next batch
 * boundary (at once when the log is idle) it captures, starts a new segment if the active one holds
 * records, writes the snapshot and removes what it made unnecessary; the caller learns the outcome.
 * A crash anywhere leaves either the previous snapshot and every segment after it, or the new
 * snapshot and at least every segment after it: replay (recovery.ts) reads snapshot + segments and
 * skips records the snapshot covers. On disk: one snapshot, the segments the history needs, the
 * active segment; transiently a second snapshot.
 *
 * Storage failure (ENOSPC, EIO, any write or fsync error): every waiting write is rejected with
 * UNAVAILABLE and the log refuses appends; `resume()` cuts whatever was written past the last
 * durable batch, checks that the disk takes writes again, and reopens the log.
 */

export interface SegmentInfo {
  file: string;
  /** Sequence number of its first record (also in its name). */
  first: number;
  /** Sequence number of its last record (first - 1 when empty). */
  last: number;
  /** Highest revision of its put / del records (0 if none). */
  maxRev: number;
  size: number;
  /** Bytes known to be fsync'ed. */
  durableSize: number;
}

export interface WalOptions {
  compactBytes: number;
  faults?: StorageFaults | undefined;
  log: EngineLog;
  /** Milliseconds, monotonic: what INLINE's rule reads (default performance.now). */
  now?: (() => number) | undefined;
}

/** What one compaction did (for the log and the admin endpoint). */
export interface CompactionResult {
  /** The snapshot it wrote (undefined: the newest snapshot was already current). */
  snapshot?: { file: string; seq: number; revision: number; bytes: number };
  /** Files it removed: older snapshots and segments. */
  removed: string[];
  /** Bytes of the data dir's snapshot and segments afterwards. */
  diskBytes: number;
  segments: number;
}

const fdatasync = promisify(fdatasyncCb);

/**
 * When an fdatasync runs inline (blocking the event loop) instead of in the thread pool: the last
 * batch's fsync ended at least IDLE_MS ago (nobody is writing back to back, so nothing queues behind
 * it), the batch is small, and fsyncs have been fast lately (smoothed duration at most FAST_MS), so
 * that a slow or stalling disk never holds up reads, keepalives and watch streams. Under load
 * (batches back to back) or on a slow disk every fsync runs in the pool.
 */
const INLINE = { IDLE_MS: 2, MAX_BYTES: 64 * 1024, FAST_MS: 1.5 };

const closeFd = promisify(closeCb);

interface Active {
  info: SegmentInfo;
  fh: SegmentFile;
  needsHeader: boolean;
  /** Its directory entry is not yet fsync'ed. */
  dirDirty: boolean;
}

const PROBE_BYTES = 64 * 1024;

export class Wal {
  private pending: RecordText[] = [];
  /** Highest revision among pending records. */
  private pendingRev = 0;
  /** The last pending record has `more`: its operation is not completely appended yet. */
  private groupOpen = false;
  private appendedSeq: number;
  private syncedSeq: number;
  private waiters: { seq: number; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private running = false;
  private failed: UnavailableError | undefined;
  private closed = false;
  private compacting: Promise<void> | undefined;
  /** A compaction asked for by compactNow(), not yet started. */
  private forced: Deferred<CompactionResult> | undefined;
  private stopCompaction = false;
  private capture: ((seq: number) => SnapshotCapture) | undefined;
  private neededFrom: () => number = () => Infinity;
  private snapshot: { file: string; seq: number; bytes: number } | undefined;
  private readonly faults: StorageFaults | undefined;
  /** Called once per failure, after the waiting writes were rejected. */
  onFailure: ((e: UnavailableError) => void) | undefined;
  fsyncs = 0;
  /** fdatasyncs that ran inline (see INLINE). */
  inlineFsyncs = 0;
  /** When the last fdatasync ended, and the fsyncs' smoothed duration (ms, `now`); the first
   *  fsync, of unknown duration, runs in the pool. */
  private lastSyncEnd = -Infinity;
  private syncMs = Infinity;
  private readonly now: () => number;
  compactions = 0;
  compactionFailures = 0;

  private constructor(
    private readonly dir: string,
    private segments: SegmentInfo[],
    private active: Active,
    seq: number,
    snapshot: { file: string; seq: number; bytes: number } | undefined,
    private readonly opts: WalOptions,
  ) {
    this.appendedSeq = this.syncedSeq = seq;
    this.snapshot = snapshot;
    this.now = opts.now ?? (() => performance.now());
    this.faults = opts.faults;
  }

  /** Continue the log found by recovery: append to its last segment, or start one at seq + 1. */
  static async open(dir: string, found: { seq: number; segments: SegmentInfo[]; snapshot?: { file: string; seq: number; bytes: number } | undefined }, opts: WalOptions): Promise<Wal> {
    const segments = found.segments.slice();
    let last = segments.at(-1);
    if (last && last.last !== found.seq) {
      // An empty segment named for a sequence the log does not reach (cannot be appended to).
      if (last.size === 0) {
        await unlink(join(dir, last.file));
        segments.pop();
      }
      last = undefined;
    }
    let active: Active;
    if (last) {
      active = { info: last, fh: SegmentFile.open(join(dir, last.file), 'a'), needsHeader: last.size === 0, dirDirty: false };
    } else {
      const info = newSegment(found.seq + 1);
      active = { info, fh: SegmentFile.open(join(dir, info.file), 'wx'), needsHeader: true, dirDirty: true };
      segments.push(info);
    }
    return new Wal(dir, segments, active, found.seq, found.snapshot, opts);
  }

  /** How to capture the full state as of the last appended record (for compaction). */
  setSnapshotSource(capture: (seq: number) => SnapshotCapture): void {
    this.capture = capture;
  }

  /** The oldest revision the in-memory history still serves: segments with events from there on are kept. */
  setRetention(neededFrom: () => number): void {
    this.neededFrom = neededFrom;
  }

  get seq(): number {
    return this.appendedSeq;
  }

  /** Why the log refuses writes (storage failure), if it does. */
  get failure(): UnavailableError | undefined {
    return this.failed;
  }

  /** Bytes of the log's segments and snapshot on disk. */
  get diskBytes(): number {
    let n = this.snapshot?.bytes ?? 0;
    for (const s of this.segments) n += s.size;
    return n;
  }

  /** Bytes of the log's segments (without the snapshot). */
  get segmentBytes(): number {
    let n = 0;
    for (const s of this.segments) n += s.size;
    return n;
  }

  get segmentCount(): number {
    return this.segments.length;
  }

  // ------------------------------------------------------------------ appending (buffered until sync)

  // One operation that needs several records appends them in one synchronous run, each but the
  // last with `more` (records.ts): they then land in one batch, so one write, one segment, and no
  // compaction capture between them; replay applies them all or none.

  appendPut(r: number, k: string, v: string, c: number, n: number, l: string | undefined, more = false): void {
    this.push(putJson(this.next(), r, k, v, c, n, l, more), r, more);
  }

  appendDel(r: number, k: string, more = false): void {
    this.push(delJson(this.next(), r, k, more), r, more);
  }

  appendGrant(id: string, ttl: number): void {
    this.push(grantJson(this.next(), id, ttl), 0);
  }

  appendRevoke(id: string): void {
    this.push(revokeJson(this.next(), id), 0);
  }

  private next(): number {
    if (this.failed) throw this.failed;
    if (this.closed) throw new UnavailableError('write-ahead log closed');
    return ++this.appendedSeq;
  }

  private push(json: RecordText, rev: number, more = false): void {
    this.pending.push(json);
    this.groupOpen = more;
    if (rev > this.pendingRev) this.pendingRev = rev;
  }

  /** Resolves when everything appended so far is durable. */
  sync(): Promise<void> {
    if (this.failed) return Promise.reject(this.failed);
    const target = this.appendedSeq;
    if (this.syncedSeq >= target) return Promise.resolve();
    const p = new Promise<void>((resolve, reject) => this.waiters.push({ seq: target, resolve, reject }));
    if (!this.running) void this.loop();
    return p;
  }

  private async loop(): Promise<void> {
    this.running = true;
    let rotatedFrom: SegmentFile | undefined;
    try {
      while (this.pending.length > 0 && !this.failed) {
        const a = this.active;
        const upTo = this.appendedSeq;
        const upToRev = this.pendingRev;
        // A batch never ends inside an operation (see appendPut): compaction captures the state and
        // starts a new segment only between batches, and replay takes a group cut by a segment's
        // end for corruption.
        if (this.groupOpen) throw new Error('internal error: a log batch would end inside an operation of several records');
        const buf = encodeBatch(this.pending, a.needsHeader ? `{"t":"segment","v":${FORMAT_VERSION},"first":${a.info.first}}` : undefined);
        this.pending = [];
        const cut = this.faults?.write?.(a.info.file, buf.length, buf);
        const len = typeof cut === 'number' ? Math.min(cut, buf.length) : buf.length;
        for (let off = 0; off < len; ) {
          const n = writeSync(a.fh.fd, buf, off, len - off);
          off += n;
          a.info.size += n; // counted as written, so a failure after a partial write cuts it (resume)
        }
        if (len < buf.length) throw errnoError('EIO');
        a.needsHeader = false;
        a.info.last = upTo;
        if (upToRev > a.info.maxRev) a.info.maxRev = upToRev;
        // Step 1 of compaction, synchronously after the write: nothing else was appended since, so
        // the capture is exactly the state after record `upTo`.
        let cap: SnapshotCapture | undefined;
        let forced: Deferred<CompactionResult> | undefined;
        if ((a.info.size >= this.opts.compactBytes || this.forced) && this.capture && !this.compacting) {
          forced = this.forced;
          this.forced = undefined;
          cap = this.capture(upTo);
          this.faults?.point?.('rotate');
          this.rotate(upTo + 1);
          rotatedFrom = a.fh;
          this.faults?.point?.('rotated');
        }
        const t0 = this.now();
        if (this.inlineSync(buf.length, t0)) {
          fdatasyncSync(a.fh.fd);
          this.inlineFsyncs++;
        } else {
          await this.faults?.sync?.(a.info.file);
          await a.fh.datasync();
        }
        this.lastSyncEnd = this.now();
        const took = this.lastSyncEnd - t0;
        this.syncMs = this.syncMs === Infinity ? took : this.syncMs * 0.8 + took * 0.2;
        this.fsyncs++;
        if (a.dirDirty) {
          await this.faults?.sync?.(this.dir);
          await fsyncDir(this.dir);
          a.dirDirty = false;
        }
        a.info.durableSize = a.info.size;
        this.syncedSeq = upTo;
        this.release();
        if (cap) {
          rotatedFrom = undefined;
          const c = cap;
          this.track(a.fh.close().catch(() => undefined).then(() => this.compact(c)), forced);
        }
      }
    } catch (e) {
      if (rotatedFrom) void rotatedFrom.close().catch(() => undefined);
      this.fail(e);
    } finally {
      this.running = false;
      this.takeForced();
    }
  }

  /** INLINE's rule. Never with injected faults (their sync hook is asynchronous). */
  private inlineSync(bytes: number, now: number): boolean {
    return this.faults === undefined && bytes <= INLINE.MAX_BYTES && now - this.lastSyncEnd >= INLINE.IDLE_MS && this.syncMs <= INLINE.FAST_MS;
  }

  private release(): void {
    let i = 0;
    while (i < this.waiters.length && this.waiters[i]!.seq <= this.syncedSeq) i++;
    for (const w of this.waiters.splice(0, i)) w.resolve();
  }

  private rotate(first: number): void {
    const info = newSegment(first);
    const fh = SegmentFile.open(join(this.dir, info.file), 'wx');
    this.segments.push(info);
    this.active = { info, fh, needsHeader: true, dirDirty: true };
  }

  private fail(e: unknown): void {
    const code = (e as NodeJS.ErrnoException).code ?? 'EIO';
    this.failed = new UnavailableError(
      `storage unavailable: ${(e as Error).message} (data dir ${this.dir}); writes are refused until the disk accepts writes again`,
      { cause: e, details: { storage: code } },
    );
    this.pending = [];
    this.groupOpen = false;
    this.stopCompaction = true;
    for (const w of this.waiters.splice(0)) w.reject(this.failed);
    this.forced?.reject(this.failed);
    this.forced = undefined;
    this.onFailure?.(this.failed);
  }

  // ------------------------------------------------------------------ compaction

  /**
   * Compact now: capture the state as of the last appended record (at the next batch boundary, at
   * once when the log is idle), start a new segment if the active one holds records, write the
   * snapshot, and remove the older snapshot and every segment it covers that the history no longer
   * needs. Resolves with what it did once that is done; rejects if the snapshot could not be
   * written (the log keeps every record) or storage failed. Concurrent calls share one compaction.
   */
  compactNow(): Promise<CompactionResult> {
    if (this.failed) return Promise.reject(this.failed);
    if (this.closed) return Promise.reject(new UnavailableError('write-ahead log closed'));
    if (!this.capture) return Promise.reject(new UnavailableError('write-ahead log has no snapshot source'));
    const f = (this.forced ??= deferred<CompactionResult>());
    this.takeForced();
    return f.promise;
  }

  /** Start the requested compaction if nothing is in the way: no batch being written (the loop
   *  takes the request at its next batch boundary), no compaction running (it is taken when that
   *  one ends). Synchronous from the capture to the rotation, like the loop's own. */
  private takeForced(): void {
    const f = this.forced;
    if (!f || this.running || this.pending.length > 0 || this.compacting || this.failed || this.closed) return;
    this.forced = undefined;
    const seq = this.appendedSeq;
    if (this.snapshot?.seq === seq) {
      this.track(this.cleanup().then((removed) => this.result(undefined, removed)), f);
      return;
    }
    const cap = this.capture!(seq);
    const a = this.active;
    if (a.info.last >= a.info.first) {
      this.rotate(seq + 1);
      this.track(a.fh.close().catch(() => undefined).then(() => this.compact(cap)), f);
    } else {
      this.track(this.compact(cap), f);
    }
  }

  /** Run a compaction as `compacting`; report its outcome to `forced` (a compactNow() caller) or,
   *  for the automatic one, log a failure. Then take a request that waited for it. */
  private track(p: Promise<CompactionResult>, forced: Deferred<CompactionResult> | undefined): void {
    const done = p.then(
      (r) => forced?.resolve(r),
      (e: unknown) => {
        if (this.stopCompaction || this.closed) return forced?.reject(this.failed ?? new UnavailableError('write-ahead log closed', { cause: e }));
        this.compactionFailures++;
        this.opts.log(`compaction failed, the log keeps every record and it is retried at the next threshold: ${(e as Error).message}`, 'compaction-failed', {
          error: (e as Error).message,
        });
        forced?.reject(e);
      },
    );
    this.compacting = done.finally(() => {
      this.compacting = undefined;
      this.takeForced();
    });
  }

  private async compact(cap: SnapshotCapture): Promise<CompactionResult> {
    const written = await writeSnapshot(this.dir, cap, { faults: this.faults, aborted: () => this.stopCompaction || this.closed });
    this.snapshot = { ...written, seq: cap.seq };
    this.compactions++;
    const removed = await this.cleanup();
    const r = this.result({ file: written.file, seq: cap.seq, revision: cap.revision, bytes: written.bytes }, removed);
    this.opts.log(
      `compaction: wrote ${written.file} (revision ${cap.revision}, ${cap.kvs.length} keys, ${written.bytes} bytes), removed ${removed.length} file(s); the log is now ${r.diskBytes} bytes in ${r.segments} segment(s)`,
      'compaction',
      { snapshot: written.file, revision: cap.revision, keys: cap.kvs.length, bytes: written.bytes, removed: removed.length, diskBytes: r.diskBytes, segments: r.segments },
    );
    return r;
  }

  private result(snapshot: CompactionResult['snapshot'], removed: string[]): CompactionResult {
    return { ...(snapshot ? { snapshot } : {}), removed, diskBytes: this.diskBytes, segments: this.segments.length };
  }

  /** Remove what the newest snapshot made unnecessary: older snapshots and old segments (step 3).
   *  Returns the names of the files removed. */
  async cleanup(): Promise<string[]> {
    const snap = this.snapshot;
    const removed: string[] = [];
    if (!snap) return removed;
    const gone = (file: string) => {
      if (removed.push(file) === 1) this.faults?.point?.('cleanup-partial');
    };
    for (const s of (await listDataDir(this.dir)).snapshots) {
      if (s.seq >= snap.seq) continue;
      await unlink(join(this.dir, s.file));
      gone(s.file);
    }
    const neededFrom = this.neededFrom();
    // Oldest first, and only a prefix, so the segments kept stay contiguous.
    while (this.segments.length > 1) {
      const s = this.segments[0]!;
      if (s === this.active.info || s.last > snap.seq || s.maxRev >= neededFrom) break;
      await unlink(join(this.dir, s.file));
      this.segments.shift();
      gone(s.file);
    }
    this.faults?.point?.('cleanup-done');
    return removed;
  }

  // ------------------------------------------------------------------ failure and lifecycle

  /**
   * After a storage failure: cut every segment back to what was durable, check that the disk takes a
   * write and an fsync, and accept appends again. Rejects (and stays failed) if the disk does not.
   * Appended-but-undurable records are gone: the caller reloads its state from the log.
   */
  async resume(): Promise<void> {
    if (!this.failed || this.closed) return;
    await this.compacting;
    await this.active.fh.close().catch(() => undefined);
    while (this.segments.length > 1 && this.segments.at(-1)!.first > this.syncedSeq) {
      await unlink(join(this.dir, this.segments.pop()!.file)).catch((e: NodeJS.ErrnoException) => {
        if (e.code !== 'ENOENT') throw e;
      });
    }
    const last = this.segments.at(-1)!;
    const path = join(this.dir, last.file);
    if ((await stat(path)).size !== last.durableSize) await truncate(path, last.durableSize);
    last.size = last.durableSize;
    last.last = Math.max(last.first - 1, Math.min(last.last, this.syncedSeq));
    // The probe: a write and an fdatasync of a scratch file (*.tmp files are removed on open).
    const probe = join(this.dir, 'probe.tmp');
    const p = await open(probe, 'w');
    try {
      this.faults?.write?.(probe, PROBE_BYTES);
      await p.write(Buffer.alloc(PROBE_BYTES));
      await this.faults?.sync?.(probe);
      await p.datasync();
    } finally {
      await p.close().catch(() => undefined);
      await unlink(probe).catch(() => undefined);
    }
    // close() may have run meanwhile (it closed the old descriptor): stay closed.
    if (this.closed) throw new UnavailableError('write-ahead log closed');
    const fh = SegmentFile.open(path, 'a');
    this.active = { info: last, fh, needsHeader: last.size === 0, dirDirty: true };
    this.appendedSeq = this.syncedSeq;
    this.pendingRev = 0;
    this.stopCompaction = false;
    this.failed = undefined;
  }

  private closing: Promise<void> | undefined;

  /** Flush what is pending, stop compaction, close. Idempotent. Rejects if the final flush or the
   *  close failed (nothing acknowledged is affected: acknowledgements wait for sync). */
  close(): Promise<void> {
    return (this.closing ??= (async () => {
      let err: unknown;
      if (!this.failed) await this.sync().catch((e: unknown) => void (err = e));
      this.closed = true;
      this.forced?.reject(new UnavailableError('write-ahead log closed'));
      this.forced = undefined;
      await this.compacting;
      await this.active.fh.close().catch((e: unknown) => void (err ??= e));
      if (err !== undefined) throw err;
    })());
  }
}

function newSegment(first: number): SegmentInfo {
  return { file: segmentName(first), first, last: first - 1, maxRev: 0, size: 0, durableSize: 0 };
}

/** An open segment file. Opened synchronously: rotation must not yield between capture and switch. */
class SegmentFile {
  private closed: Promise<void> | undefined;
  private constructor(readonly fd: number) {}
  static open(path: string, flags: 'a' | 'wx'): SegmentFile {
    return new SegmentFile(openSync(path, flags));
  }
  datasync(): Promise<void> {
    return fdatasync(this.fd);
  }
  /** Idempotent: a descriptor closed twice could close whatever reused its number meanwhile. */
  close(): Promise<void> {
    return (this.closed ??= closeFd(this.fd));
  }
}
