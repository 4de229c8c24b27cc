import { InvalidArgumentError } from '../core/errors.js';
import type { StorageFaults } from './faults.js';

export { DEFAULT_HISTORY_BYTES, DEFAULT_HISTORY_EVENTS } from './history.js';

/** What an engine log line is about: the server maps it to a level and an event name. */
export type StorageLogKind =
  | 'torn-tail'
  | 'recovered'
  | 'migrated'
  | 'storage-failed'
  | 'storage-still-failed'
  | 'storage-resumed'
  | 'storage-lost-data'
  | 'compaction'
  | 'compaction-failed';

/** A storage event: one human line, what it is about, and its figures (file, offset, bytes...). */
export type EngineLog = (line: string, kind: StorageLogKind, fields?: Readonly<Record<string, unknown>>) => void;

export interface EngineOptions {
  /** Data directory for durable persistence; omit for a purely in-memory engine. */
  dataDir?: string;
  /** Events kept for watchers to resume from (default 50,000). */
  historyEvents?: number;
  /** Same as historyEvents (the older name). */
  historyLimit?: number;
  /** Bytes of events kept for resume (default 64 MiB; see history.ts for what an event costs). */
  historyBytes?: number;
  /** Start a new log segment and write a snapshot when the active segment passes this many bytes
   *  (default 64 MiB). */
  compactBytes?: number;
  /** Open a data dir whose log is corrupt: keep every record before the first bad one and move the
   *  rest to lost+found (see `recovery`). Without it, such a dir refuses to open. */
  recover?: boolean;
  /** After a storage failure, check the disk this often, in ms (default 1000). */
  storageRetryMs?: number;
  /** Where storage events go (torn tails, recovery, failures, compactions). Default: a line on
   *  stderr for everything but compactions. */
  log?: EngineLog;
  /** Test-only fault injection (faults.ts). Default: from ROSTER_FAULTS, else none. */
  faults?: StorageFaults;
  /** The engine's clock in ms (default Date.now for leases; the log's inline-fsync rule reads
   *  performance.now unless this is given). Tests inject it. */
  now?: () => number;
  minTtl?: number;
}

/** The durable engine's settings as the server and the CLI pass them through. */
export type StorageOptions = Pick<EngineOptions, 'historyEvents' | 'historyBytes' | 'compactBytes' | 'recover' | 'storageRetryMs'>;

export const DEFAULT_COMPACT_BYTES = 64 * 1024 * 1024;
export const DEFAULT_STORAGE_RETRY_MS = 1000;

/** Reject settings that are not whole numbers in range, naming the setting. */
export function validateOptions(opts: EngineOptions): void {
  for (const k of ['historyEvents', 'historyLimit', 'historyBytes', 'compactBytes', 'storageRetryMs'] as const) {
    const v = opts[k];
    const min = k === 'compactBytes' ? 1024 : k === 'storageRetryMs' ? 1 : 0;
    if (v !== undefined && (!Number.isSafeInteger(v) || v < min)) {
      throw new InvalidArgumentError(`invalid ${k} ${String(v)}: expected a whole number >= ${min}`);
    }
  }
}
