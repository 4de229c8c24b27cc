import { writeSync } from 'node:fs';
import { mkdir, open, readFile, rename, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { RosterError } from '../core/errors.js';

/**
 * Write-ahead log with group commit, plus a snapshot file that bounds replay time.
 *
 * Durability contract: `sync()` resolves only after every record appended before the call has been
 * written and fdatasync'ed. The engine acknowledges a write (and publishes its watch event) only
 * after that, so whatever a client or watcher has seen survives `kill -9`.
 *
 * Files in the data dir:
 *   wal.log        one JSON record per line, each with a sequence number `s`
 *   snapshot.json  full state as of sequence `seq` (written to .tmp, fsynced, renamed)
 * Replay = snapshot, then log records with s > snapshot.seq. A torn last line (crash mid-write)
 * is dropped; a corrupt line elsewhere is an error, never silently skipped.
 */
export interface WalRecord {
  s: number;
  o: 'put' | 'del' | 'grant' | 'revoke';
  [k: string]: unknown;
}

export interface SnapshotState {
  seq: number;
  [k: string]: unknown;
}

export interface WalOptions {
  /** Rewrite a snapshot and truncate the log when it grows beyond this many bytes. */
  compactBytes?: number;
}

export class Wal {
  private fh: FileHandle;
  private pending: string[] = [];
  private appendedSeq: number;
  private syncedSeq: number;
  private waiters: { seq: number; resolve: () => void; reject: (e: unknown) => void }[] = [];
  private running = false;
  private failed: Error | undefined;
  private size: number;
  private snapshotFn: (() => SnapshotState) | undefined;
  private readonly compactBytes: number;
  /** Records written since open (for metrics). */
  fsyncs = 0;

  private constructor(
    private readonly dir: string,
    fh: FileHandle,
    seq: number,
    size: number,
    opts: WalOptions,
  ) {
    this.fh = fh;
    this.appendedSeq = seq;
    this.syncedSeq = seq;
    this.size = size;
    this.compactBytes = opts.compactBytes ?? 64 * 1024 * 1024;
  }

  /** Open (creating) the data dir and return the WAL and what to replay. */
  static async open(dir: string, opts: WalOptions = {}): Promise<{ wal: Wal; snapshot: SnapshotState | undefined; records: WalRecord[] }> {
    await mkdir(dir, { recursive: true });
    let snapshot: SnapshotState | undefined;
    try {
      snapshot = JSON.parse(await readFile(join(dir, 'snapshot.json'), 'utf8')) as SnapshotState;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') {
        throw new RosterError('INTERNAL', `cannot read snapshot in ${dir}: ${(e as Error).message}`, { cause: e });
      }
    }
    const logPath = join(dir, 'wal.log');
    let text = '';
    try {
      text = await readFile(logPath, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    const records: WalRecord[] = [];
    const lines = text.split('\n');
    let validBytes = 0;
    const base = snapshot?.seq ?? 0;
    let seq = base;
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!;
      const isLast = i === lines.length - 1;
      if (line === '') {
        if (!isLast) validBytes += 1;
        continue;
      }
      let rec: WalRecord;
      try {
        rec = JSON.parse(line) as WalRecord;
      } catch (e) {
        // Only the tail can be torn: it was being written when the process died, so it was never acknowledged.
        if (isLast || lines.slice(i + 1).every((l) => l === '')) break;
        throw new RosterError('INTERNAL', `corrupt record at line ${i + 1} of ${logPath}`, { cause: e });
      }
      if (isLast) break; // no trailing newline: the write was cut short, never fsynced as a whole
      validBytes += Buffer.byteLength(line) + 1;
      if (rec.s > seq) {
        records.push(rec);
        seq = rec.s;
      }
    }
    const fh = await open(logPath, 'a+');
    // Cut a torn tail so new records start on a clean line.
    const st = await stat(logPath);
    if (st.size !== validBytes) {
      await fh.truncate(validBytes);
      await fh.datasync();
    }
    return { wal: new Wal(dir, fh, seq, validBytes, opts), snapshot, records };
  }

  /** Give the WAL a way to capture full state for log compaction. */
  setSnapshotSource(fn: () => SnapshotState): void {
    this.snapshotFn = fn;
  }

  get seq(): number {
    return this.appendedSeq;
  }

  /** The error that stopped the log (write or fsync failure, or close), if any. */
  get failure(): Error | undefined {
    return this.failed;
  }

  /** Append a record (buffered). Returns its sequence number. Call sync() to make it durable. */
  append(rec: Omit<WalRecord, 's'>): number {
    if (this.failed) throw this.failed;
    const s = ++this.appendedSeq;
    // Same line as JSON.stringify({ s, ...rec }), without building the merged object.
    this.pending.push(`{"s":${s},${JSON.stringify(rec).slice(1)}`);
    return s;
  }

  /** Resolves when everything appended so far is on disk. */
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
    try {
      while (this.pending.length > 0) {
        const batch = this.pending;
        const upTo = this.appendedSeq;
        this.pending = [];
        const buf = Buffer.from(batch.join('\n') + '\n');
        // The write only fills the page cache: done here, it saves the commit a round trip through
        // the thread pool (a wake-up each way); the fdatasync, which waits for the disk, stays off
        // the event loop.
        for (let off = 0; off < buf.length; ) off += writeSync(this.fh.fd, buf, off, buf.length - off);
        await this.fh.datasync();
        this.fsyncs++;
        this.size += buf.length;
        if (this.size > this.compactBytes && this.snapshotFn) await this.compact();
        this.syncedSeq = Math.max(this.syncedSeq, upTo);
        this.release();
      }
    } catch (e) {
      this.failed = new RosterError('INTERNAL', `write-ahead log failed in ${this.dir}: ${(e as Error).message}; refusing further writes`, { cause: e });
      for (const w of this.waiters.splice(0)) w.reject(this.failed);
    } finally {
      this.running = false;
    }
  }

  private release(): void {
    let i = 0;
    while (i < this.waiters.length && this.waiters[i]!.seq <= this.syncedSeq) i++;
    for (const w of this.waiters.splice(0, i)) w.resolve();
  }

  /** Snapshot the full in-memory state (which includes everything appended, even still pending),
   *  then truncate the log. Runs inside the flush loop, so no write is in flight. */
  private async compact(): Promise<void> {
    const state = this.snapshotFn!();
    state.seq = this.appendedSeq;
    const tmp = join(this.dir, 'snapshot.json.tmp');
    const fh = await open(tmp, 'w');
    try {
      await fh.writeFile(JSON.stringify(state));
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, join(this.dir, 'snapshot.json'));
    const dfh = await open(this.dir, 'r');
    try {
      await dfh.sync();
    } finally {
      await dfh.close();
    }
    await this.fh.truncate(0);
    await this.fh.datasync();
    this.pending = [];
    this.size = 0;
    this.syncedSeq = this.appendedSeq;
  }

  private closing: Promise<void> | undefined;

  /** Flush what is pending, then close. Idempotent. Rejects if the final flush or the close failed
   *  (nothing acknowledged is affected: acknowledgements wait for sync), so the caller learns of it. */
  close(): Promise<void> {
    return (this.closing ??= (async () => {
      let err: unknown;
      if (!this.failed) await this.sync().catch((e: unknown) => void (err = e));
      await this.fh.close().catch((e: unknown) => void (err ??= e));
      this.failed ??= new RosterError('CLOSED', 'write-ahead log closed');
      if (err !== undefined) throw err;
    })());
  }
}
