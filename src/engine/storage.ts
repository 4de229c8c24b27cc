import { mkdir } from 'node:fs/promises';
import { ClosedError, type UnavailableError } from '../core/errors.js';
import { faultsFromEnv } from './faults.js';
import { removeLegacy } from './legacy.js';
import { lockDataDir, type DirLock } from './lock.js';
import { DEFAULT_COMPACT_BYTES, DEFAULT_STORAGE_RETRY_MS, type EngineLog, type EngineOptions } from './options.js';
import { loadDataDir, type RecoveryReport } from './recovery.js';
import type { State } from './state.js';
import { Wal } from './wal.js';

/** What the storage needs from the engine it serves. */
export interface StorageHost {
  /** The current state (captured for snapshots, its history decides which segments are kept). */
  readonly state: State;
  newState(): State;
  /** Replace the state by one reloaded from the log after a storage failure. */
  adopt(fresh: State): void;
}

/**
 * A data dir in use: its lock, its log, and the storage-failure cycle.
 *
 * On a write or fsync error the log rejects the writes it holds; `error` is set (the engine refuses
 * writes with it and reports it in health()), and every storageRetryMs the log tries to resume: cut
 * back to what was durable, probe the disk, reload the state from the files (the same path as a
 * restart: recovery.ts). Once that succeeds `error` is cleared and writes resume by themselves.
 */
export class Storage {
  private error_: UnavailableError | undefined;
  private retryTimer: NodeJS.Timeout | undefined;
  private closed = false;
  failures = 0;

  private constructor(
    readonly dir: string,
    readonly wal: Wal,
    private readonly lock: DirLock,
    /** What opening the data dir found and did: torn tails cut, records set aside, migration. */
    readonly report: RecoveryReport,
    private readonly host: StorageHost,
    private readonly opts: EngineOptions,
    private readonly log: EngineLog,
  ) {}

  /** Lock `dir`, replay it into `host.state`, and continue its log. */
  static async open(dir: string, host: StorageHost, opts: EngineOptions, log: EngineLog): Promise<Storage> {
    await mkdir(dir, { recursive: true });
    const lock = await lockDataDir(dir);
    let wal: Wal | undefined;
    try {
      const loaded = await loadDataDir(dir, host.state, { recover: opts.recover === true, log });
      wal = await Wal.open(dir, loaded, { compactBytes: opts.compactBytes ?? DEFAULT_COMPACT_BYTES, faults: opts.faults ?? faultsFromEnv(), log, now: opts.now });
      wal.setSnapshotSource((seq) => host.state.capture(seq));
      wal.setRetention(() => host.state.history.oldestRevision());
      if (loaded.report.migrated) {
        await wal.compactNow();
        loaded.report.removed.push(...(await removeLegacy(dir)));
      } else {
        await wal.cleanup();
      }
      const s = new Storage(dir, wal, lock, loaded.report, host, opts, log);
      wal.onFailure = (err) => s.failed(err);
      return s;
    } catch (e) {
      await wal?.close().catch(() => undefined);
      lock.release();
      throw e;
    }
  }

  /** Set while writes cannot be made durable. */
  get error(): UnavailableError | undefined {
    return this.error_;
  }

  get retryMs(): number {
    return this.opts.storageRetryMs ?? DEFAULT_STORAGE_RETRY_MS;
  }

  /** Flush and close the log, then give the dir up. */
  async close(): Promise<void> {
    this.closed = true;
    if (this.retryTimer) clearTimeout(this.retryTimer);
    try {
      await this.wal.close();
    } finally {
      this.lock.release();
    }
  }

  private failed(err: UnavailableError): void {
    if (this.closed) return;
    this.error_ = err;
    this.failures++;
    this.log(`${err.message}. Health checks fail; reads and keepalives go on and no session expires; checking the disk every ${this.retryMs} ms`, 'storage-failed', {
      dir: this.dir,
      code: err.details?.storage,
      retryMs: this.retryMs,
    });
    this.retry(true);
  }

  private retry(first = false): void {
    this.retryTimer = setTimeout(() => {
      void this.resume().then(
        () => this.log(`storage accepts writes again: writes resume after revision ${this.host.state.published}`, 'storage-resumed', { dir: this.dir, revision: this.host.state.published }),
        (e: unknown) => {
          if (this.closed) return;
          if (first) this.log(`storage still unavailable (${(e as Error).message}); retrying quietly`, 'storage-still-failed', { dir: this.dir });
          this.retry();
        },
      );
    }, this.retryMs);
    this.retryTimer.unref();
  }

  /** Reopen the log and reload the state from it (what the disk holds: every acknowledged write). */
  private async resume(): Promise<void> {
    if (this.closed) throw new ClosedError('engine is closed');
    await this.wal.resume();
    const fresh = this.host.newState();
    await loadDataDir(this.dir, fresh, { recover: false, log: this.log });
    if (this.closed) throw new ClosedError('engine is closed');
    this.host.adopt(fresh);
    this.error_ = undefined;
  }
}
