import { readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncDir, scanLines } from './files.js';
import type { EngineLog } from './options.js';
import { CorruptDataError } from './records.js';
import type { RecoveryReport } from './types.js';

/**
 * The data dir format before version 2, read once to migrate: `snapshot.json` (one JSON object:
 * seq, revision, compacted, leases [{id, ttl}], kvs [[key, value, createRevision, modRevision,
 * version, lease|null]]) and `wal.log` (one JSON record per line, no checksum: {s, o: put|del|grant|
 * revoke, ...}). Records are applied as that code applied them. The engine then writes the state as
 * a version 2 snapshot and removes these files (removeLegacy), so this runs once per data dir.
 */

export interface LegacySnapshot {
  seq: number;
  revision: number;
  leases: { id: string; ttl: number }[];
  kvs: [string, string, number, number, number, string | null][];
}

export interface LegacyRecord {
  s: number;
  o: 'put' | 'del' | 'grant' | 'revoke';
  r?: number;
  k?: string;
  v?: string;
  l?: string;
  id?: string;
  ttl?: number;
}

export interface LegacyTarget {
  snapshot(s: LegacySnapshot): void;
  apply(rec: LegacyRecord): void;
}

const FILES = ['wal.log', 'snapshot.json', 'snapshot.json.tmp'];

/** Load the old files into `target`; returns the last sequence number. `setAside` (with --recover)
 *  moves what follows a bad line out of the way. */
export async function loadLegacy(
  dir: string,
  target: LegacyTarget,
  opts: { recover: boolean; log: EngineLog },
  setAside: (file: string, offset: number, reason: string) => Promise<void>,
  report: RecoveryReport,
): Promise<number> {
  let seq = 0;
  let text: string | undefined;
  try {
    text = await readFile(join(dir, 'snapshot.json'), 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (text !== undefined) {
    let s: unknown;
    try {
      s = JSON.parse(text);
    } catch (e) {
      throw new CorruptDataError('snapshot.json', 0, `not JSON: ${(e as Error).message}`);
    }
    if (!isLegacySnapshot(s)) throw new CorruptDataError('snapshot.json', 0, 'not a roster snapshot (format 1)');
    target.snapshot(s);
    seq = s.seq;
  }
  let bad: { offset: number; reason: string } | undefined;
  let res;
  try {
    res = await scanLines(join(dir, 'wal.log'), (buf, start, end, offset) => {
      if (start === end) return;
      let rec: unknown;
      try {
        rec = JSON.parse(buf.toString('utf8', start, end));
      } catch (e) {
        bad = { offset, reason: `not JSON: ${(e as Error).message}` };
        return false;
      }
      if (!isLegacyRecord(rec)) {
        bad = { offset, reason: 'not a log record (format 1)' };
        return false;
      }
      if (rec.s <= seq) return;
      target.apply(rec);
      seq = rec.s;
    });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
  if (bad) {
    if (!opts.recover) {
      throw new CorruptDataError('wal.log', bad.offset, bad.reason, `; nothing from there on was applied. \`roster server --recover --data-dir ${dir}\` keeps every record before it`);
    }
    await setAside('wal.log', bad.offset, bad.reason);
  } else if (res && res.end < res.size) {
    report.tornTails.push({ file: 'wal.log', offset: res.end, bytes: res.size - res.end });
    opts.log(`wal.log: ignored a torn last record at byte offset ${res.end} (${res.size - res.end} bytes): a write interrupted by a crash, never acknowledged`, 'torn-tail', { file: 'wal.log', offset: res.end, bytes: res.size - res.end });
  }
  opts.log(`migrating data dir ${dir} from format 1 (wal.log, snapshot.json; last record ${seq}) to format 2`, 'migrated', { dir, seq });
  return seq;
}

/** Remove the old files (after their state is durable in the new format). Returns those removed. */
export async function removeLegacy(dir: string): Promise<string[]> {
  const removed: string[] = [];
  for (const f of FILES) {
    try {
      await unlink(join(dir, f));
      removed.push(f);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
  }
  await fsyncDir(dir);
  return removed;
}

const isInt = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isStr = (v: unknown): v is string => typeof v === 'string';

function isLegacySnapshot(s: unknown): s is LegacySnapshot {
  if (s === null || typeof s !== 'object') return false;
  const o = s as Record<string, unknown>;
  return (
    isInt(o.seq) &&
    isInt(o.revision) &&
    Array.isArray(o.leases) &&
    o.leases.every((l: { id?: unknown; ttl?: unknown }) => l !== null && typeof l === 'object' && isStr(l.id) && isInt(l.ttl)) &&
    Array.isArray(o.kvs) &&
    o.kvs.every((e: unknown[]) => Array.isArray(e) && isStr(e[0]) && isStr(e[1]) && isInt(e[2]) && isInt(e[3]) && isInt(e[4]) && (e[5] === null || isStr(e[5])))
  );
}

function isLegacyRecord(r: unknown): r is LegacyRecord {
  if (r === null || typeof r !== 'object') return false;
  const o = r as Record<string, unknown>;
  if (!isInt(o.s)) return false;
  switch (o.o) {
    case 'put':
      return isInt(o.r) && isStr(o.k) && isStr(o.v) && (o.l === undefined || isStr(o.l));
    case 'del':
      return isInt(o.r) && isStr(o.k);
    case 'grant':
      return isStr(o.id) && isInt(o.ttl);
    case 'revoke':
      return isStr(o.id);
    default:
      return false;
  }
}
