import { open, rename, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { KeyValue } from '../core/kv.js';
import { fsyncDir, scanLines, snapshotName } from './files.js';
import type { StorageFaults } from './faults.js';
import {
  asSnapshotRecord,
  CorruptDataError,
  decodeLine,
  FORMAT_VERSION,
  line,
  type KvEntry,
  type LeaseEntry,
  type SnapshotHeader,
} from './records.js';

/**
 * Snapshots: the whole state as of one log record, so replay starts there instead of at the
 * beginning of time.
 *
 * Written to `snap-<seq>.snap.tmp` in 1 MiB pieces (the event loop keeps serving between them),
 * fdatasync'ed, renamed to `snap-<seq>.snap`, and the directory fsync'ed: a snapshot under its final
 * name is always complete, and is used only if its `end` trailer is there and agrees with the header.
 */

/** The state to write, captured at one instant: stored KeyValues are immutable, so the capture is
 *  a list of references, and later writes cannot change what is being written. */
export interface SnapshotCapture {
  seq: number;
  revision: number;
  leases: readonly { id: string; ttl: number }[];
  kvs: readonly KeyValue[];
}

const PIECE = 1024 * 1024;

/**
 * The snapshot file's text, in pieces of about `pieceBytes` (the last one ends with the trailer).
 * The same bytes make a data dir's `snap-<seq>.snap` and a backup (`roster snapshot save`).
 */
export function* snapshotPieces(cap: SnapshotCapture, pieceBytes = PIECE): Generator<string, void, undefined> {
  let piece = line({ t: 'snapshot', v: FORMAT_VERSION, s: cap.seq, r: cap.revision, keys: cap.kvs.length, leases: cap.leases.length } satisfies SnapshotHeader);
  for (const l of cap.leases) {
    piece += line({ t: 'lease', id: l.id, ttl: l.ttl } satisfies LeaseEntry);
    if (piece.length >= pieceBytes) {
      yield piece;
      piece = '';
    }
  }
  for (const kv of cap.kvs) {
    const e: KvEntry = { t: 'kv', k: kv.key, v: kv.value, c: kv.createRevision, m: kv.modRevision, n: kv.version };
    if (kv.session !== undefined) e.l = kv.session;
    piece += line(e);
    if (piece.length >= pieceBytes) {
      yield piece;
      piece = '';
    }
  }
  yield piece + line({ t: 'end', keys: cap.kvs.length, leases: cap.leases.length });
}

/** Write `cap` as a durable snapshot; returns its file name. `aborted()` stops it between pieces
 *  (the temporary file is removed and the promise rejects). */
export async function writeSnapshot(
  dir: string,
  cap: SnapshotCapture,
  opts: { faults?: StorageFaults | undefined; aborted?: () => boolean } = {},
): Promise<{ file: string; bytes: number }> {
  const faults = opts.faults;
  const name = snapshotName(cap.seq);
  const tmp = join(dir, `${name}.tmp`);
  const fh = await open(tmp, 'w');
  let bytes = 0;
  let ok = false;
  try {
    faults?.point?.('snapshot-begin');
    let first = true;
    for (const piece of snapshotPieces(cap)) {
      if (opts.aborted?.()) throw new Error('snapshot aborted');
      const buf = Buffer.from(piece);
      faults?.write?.(tmp, buf.length);
      await fh.write(buf);
      bytes += buf.length;
      if (first) faults?.point?.('snapshot-partial');
      first = false;
    }
    await faults?.sync?.(tmp);
    await fh.datasync();
    ok = true;
  } finally {
    await fh.close().catch(() => undefined);
    if (!ok) await unlink(tmp).catch(() => undefined);
  }
  faults?.point?.('snapshot-synced');
  await rename(tmp, join(dir, name));
  faults?.point?.('snapshot-renamed');
  await faults?.sync?.(dir);
  await fsyncDir(dir);
  faults?.point?.('snapshot-dir-synced');
  return { file: name, bytes };
}

export interface SnapshotVisitor {
  header(h: SnapshotHeader): void;
  lease(l: LeaseEntry): void;
  kv(kv: KvEntry): void;
}

/**
 * Read a snapshot into `visit`, checking every entry. Throws CorruptDataError (file and offset) on
 * a bad entry, a missing trailer or counts that disagree: a snapshot is complete or unusable.
 */
export async function readSnapshot(dir: string, file: string, visit: SnapshotVisitor): Promise<SnapshotHeader> {
  let header: SnapshotHeader | undefined;
  let ended = false;
  let keys = 0;
  let leases = 0;
  let bad: CorruptDataError | undefined;
  const res = await scanLines(join(dir, file), (buf, start, end, offset) => {
    const fail = (reason: string) => {
      bad = new CorruptDataError(file, offset, reason);
      return false;
    };
    const d = decodeLine(buf, start, end);
    if (!d.ok) return fail(d.reason);
    const rec = asSnapshotRecord(d.value);
    if (typeof rec === 'string') return fail(rec);
    if (ended) return fail('entry after the end trailer');
    if (header === undefined) {
      if (rec.t !== 'snapshot') return fail('missing snapshot header');
      header = rec;
      visit.header(rec);
      return;
    }
    switch (rec.t) {
      case 'lease':
        leases++;
        visit.lease(rec);
        return;
      case 'kv':
        keys++;
        visit.kv(rec);
        return;
      case 'end':
        if (rec.keys !== keys || rec.leases !== leases || header.keys !== keys || header.leases !== leases) {
          return fail(`counts disagree: header says ${header.keys} keys and ${header.leases} leases, trailer ${rec.keys} and ${rec.leases}, file holds ${keys} and ${leases}`);
        }
        ended = true;
        return;
      default:
        return fail('second snapshot header');
    }
  });
  if (bad) throw bad;
  if (res.end !== res.size) throw new CorruptDataError(file, res.end, 'unterminated last line');
  if (!header || !ended) throw new CorruptDataError(file, res.size, 'no end trailer: the snapshot is incomplete');
  return header;
}
