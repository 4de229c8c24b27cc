import type { DeleteResult, ListResult, PutResult } from '../core/kv.js';
import type { RosterError } from '../core/errors.js';
import type { EngineEvent } from './history.js';

/** The engine's API types (engine.ts re-exports them). */

export interface PutOpts {
  lease?: string;
  ifAbsent?: boolean;
  ifVersion?: number;
}

/** One write of Engine.batch. */
export type BatchOp =
  | { op: 'put'; key: string; value: string; lease?: string; ifAbsent?: boolean; ifVersion?: number }
  | ({ op: 'delete'; key: string } & DeleteOpts);

/** Options of a delete. */
export interface DeleteOpts {
  ifVersion?: number;
  /** Put this value over the key (bound to `lease`) and then delete it, both in this one write:
   *  watchers see the put, then the delete, in one commit (the Registrar's leaving mark). Needs
   *  `ifVersion` (checked before the put). */
  lastValue?: string;
  lease?: string;
}

/** The outcome of one BatchOp: what put / delete would have returned, or the error it would have thrown. */
export type BatchResult = PutResult | DeleteResult | { error: RosterError };

export interface Subscription {
  /** Initial snapshot (when no fromRevision was given, or a reset was needed). */
  snapshot?: ListResult;
  /** Whether `snapshot` replaces a requested resume that could not be honoured (compacted history). */
  reset: boolean;
  /** Events between fromRevision and the subscription point (when resuming; empty with streamBacklog). */
  backlog: EngineEvent[];
  /** The subscription point: onEvent gets the events after it. */
  revision: number;
  cancel(): void;
}

export interface EngineStats {
  revision: number;
  keys: number;
  leases: number;
  watchers: number;
  compactedRevision: number;
  fsyncs: number;
  /** Of those, the ones run inline on the event loop (an idle log on a fast disk: wal.ts). */
  inlineFsyncs: number;
  historyEvents: number;
  historyBytes: number;
  /** Bytes of log segments and snapshot on disk. */
  diskBytes: number;
  /** Bytes of the log segments alone. */
  walBytes: number;
  segments: number;
  compactions: number;
  compactionFailures: number;
  /** Torn last records cut when the data dir was opened, and their bytes. */
  tornTails: number;
  tornBytes: number;
  storageFailures: number;
  storageAvailable: boolean;
}

/** What opening a data dir found and did (engine.recovery; docs/durability.md). */
export interface Discarded {
  file: string;
  offset: number;
  reason: string;
  /** Bytes set aside (the rest of `file` plus later segments). */
  bytes: number;
  lines: number;
  /** Lines among them that were valid records (by checksum and shape): writes lost to recovery. */
  validRecords: number;
  /** Later segment files set aside whole. */
  laterFiles: string[];
  savedIn: string;
}

export interface RecoveryReport {
  tornTails: { file: string; offset: number; bytes: number }[];
  discarded: Discarded[];
  /** Leftovers removed: temporary files, superseded snapshots, files of a finished migration. */
  removed: string[];
  migrated: boolean;
}
