/**
 * Fault injection for the storage layer, used by tests only: a failing write or fsync (ENOSPC, EIO),
 * a held fsync, and the process killed at a named step of compaction. Production code calls the
 * hooks only when they are set, so an engine without faults pays one property check per batch.
 *
 * In-process tests pass `EngineOptions.faults`. A server in a child process reads `ROSTER_FAULTS`:
 * - `crash@<point>[#<n>]`: SIGKILL itself the n-th time (default 1st) it reaches <point>;
 * - `cut-op[#<n>]`: the n-th log write (default 1st) that holds an operation of several records
 *   (records.ts) writes only up to the end of that operation's first record, then SIGKILLs itself.
 */
import { MORE_END } from './records.js';


/** The steps of compaction, in order (see wal.ts). */
export const FAULT_POINTS = [
  /** The active segment passed the threshold; its state was captured; no new segment yet. */
  'rotate',
  /** The new segment exists; the old one is not yet fsynced and nothing of the snapshot is written. */
  'rotated',
  /** The snapshot's temporary file is created, nothing written. */
  'snapshot-begin',
  /** Part of the snapshot is written to its temporary file. */
  'snapshot-partial',
  /** The temporary file is complete and fsynced, not renamed. */
  'snapshot-synced',
  /** Renamed to its final name, directory not fsynced. */
  'snapshot-renamed',
  /** Directory fsynced: the snapshot is durable. Old files not yet removed. */
  'snapshot-dir-synced',
  /** The first old file is removed, others remain. */
  'cleanup-partial',
  /** Every file the snapshot made unnecessary is removed. */
  'cleanup-done',
] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

export interface StorageFaults {
  /**
   * Before each write to a log segment or snapshot file; throw (e.g. errnoError('ENOSPC')) to fail
   * it. For a log segment it also gets the batch's bytes, and may return a count below their length:
   * only that many are written, then the write fails with EIO — what a crash or power loss in the
   * middle of the write leaves on disk (a test that closes the engine then has that torn tail).
   */
  write?(file: string, bytes: number, data?: Buffer): void | number;
  /** Before each fdatasync / fsync; throw to fail it, or return a promise to hold it. */
  sync?(file: string): void | Promise<void>;
  /** A step of compaction was reached. */
  point?(p: FaultPoint): void;
}

/** An error shaped like the one node:fs raises for `code`. */
export function errnoError(code: 'ENOSPC' | 'EIO' | 'EDQUOT', syscall = 'write'): NodeJS.ErrnoException {
  const text = code === 'ENOSPC' ? 'no space left on device' : code === 'EIO' ? 'i/o error' : 'disk quota exceeded';
  const e = new Error(`${code}: ${text}, ${syscall}`) as NodeJS.ErrnoException;
  e.code = code;
  e.syscall = syscall;
  return e;
}

/** Faults from ROSTER_FAULTS (see above), or undefined when it is not set. */
export function faultsFromEnv(env: NodeJS.ProcessEnv = process.env): StorageFaults | undefined {
  const spec = env.ROSTER_FAULTS;
  if (!spec) return undefined;
  const cut = /^cut-op(?:#(\d+))?$/.exec(spec);
  if (cut) return cutOp(Number(cut[1] ?? 1));
  const m = /^crash@([a-z-]+)(?:#(\d+))?$/.exec(spec);
  if (!m || !(FAULT_POINTS as readonly string[]).includes(m[1]!)) {
    throw new Error(`invalid ROSTER_FAULTS ${JSON.stringify(spec)}: expected crash@<point>[#n], point one of ${FAULT_POINTS.join(', ')}, or cut-op[#n]`);
  }
  const point = m[1] as FaultPoint;
  let left = Number(m[2] ?? 1);
  return {
    point(p) {
      if (p !== point || --left > 0) return;
      die(`at ${p}`);
    },
  };
}

function die(what: string): void {
  process.stderr.write(`roster: ROSTER_FAULTS: killing the process ${what}\n`);
  process.kill(process.pid, 'SIGKILL');
  // The signal is delivered on the way out of the kernel; never run past this point meanwhile.
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 10_000);
}

/** ROSTER_FAULTS=cut-op#n: the write hook cuts the n-th write holding a record with `more` just
 *  after that record; the log writes that much, and the process dies before anything else runs. */
function cutOp(n: number): StorageFaults {
  let left = n;
  return {
    write(file, _bytes, data) {
      const at = data?.indexOf(MORE_END + '\n') ?? -1;
      if (at < 0 || --left > 0) return;
      queueMicrotask(() => die(`in the middle of writing an operation of several records to ${file}`));
      return at + MORE_END.length + 1;
    },
  };
}
