import type { DeleteResult, ListResult, PutResult } from '../backend/types.js';
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
  | { op: 'delete'; key: string; ifVersion?: number };

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
  historyEvents: number;
  historyBytes: number;
  /** Bytes of log segments and snapshot on disk. */
  diskBytes: number;
  segments: number;
  compactions: number;
  compactionFailures: number;
  /** Torn last records cut when the data dir was opened, and their bytes. */
  tornTails: number;
  tornBytes: number;
  storageFailures: number;
  storageAvailable: boolean;
}
