import type { Command } from 'commander';
import { InvalidArgumentError } from '../../core/errors.js';
import type { StorageOptions } from '../../engine/engine.js';
import { parsePositiveInt } from '../shared.js';

/** `roster server`'s durability options (docs/durability.md). */
export function storageOptions(cmd: Command): Command {
  return cmd
    .option('--recover', 'start even if the log is corrupt: keep every record before the first bad one, move the rest to <data-dir>/lost+found and say what was moved')
    .option('--compact-bytes <size>', 'start a new log segment and write a snapshot when the log passes this size (e.g. 64MiB)', '64MiB')
    .option('--history-events <n>', 'events kept in memory for watchers to resume from', '50000')
    .option('--history-bytes <size>', 'bytes of events kept in memory for watchers to resume from', '64MiB');
}

export function storageFrom(opts: { recover?: boolean; compactBytes: string; historyEvents: string; historyBytes: string }): StorageOptions {
  return {
    ...(opts.recover ? { recover: true } : {}),
    compactBytes: parseSize(opts.compactBytes, 'compact-bytes', 1024),
    historyEvents: parsePositiveInt(opts.historyEvents, 'history-events', 0, 100_000_000),
    historyBytes: parseSize(opts.historyBytes, 'history-bytes', 0),
  };
}

const UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 };

/** Bytes from "65536", "64k", "64MiB", "1G" (binary units). */
export function parseSize(s: string, what: string, min: number): number {
  const m = /^(\d+)\s*([a-z]*)$/i.exec(s.trim());
  const unit = m ? UNITS[m[2]!.toLowerCase()] : undefined;
  const n = m && unit !== undefined ? Number(m[1]) * unit : NaN;
  if (!Number.isSafeInteger(n) || n < min) {
    throw new InvalidArgumentError(`invalid --${what} ${JSON.stringify(s)}: expected a size of at least ${min} bytes, like 65536, 64KiB or 64MiB`);
  }
  return n;
}
