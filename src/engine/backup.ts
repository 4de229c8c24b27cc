import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, stat, unlink } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { InvalidArgumentError, NotFoundError, RosterError } from '../core/errors.js';
import { fsyncDir, snapshotName } from './files.js';
import { lockDataDir } from './lock.js';
import { CorruptDataError, type SnapshotHeader } from './records.js';
import { readSnapshot } from './snapshot.js';

/**
 * Backups: a snapshot file outside a data dir (`roster snapshot save` writes one, from the engine's
 * exportSnapshot(); `roster snapshot restore` puts one into a new data dir).
 *
 * The file is exactly a data dir's `snap-<seq>.snap` (records.ts: one checksummed JSON record per
 * line, a header with the revision and counts, an `end` trailer): checkable line by line, complete
 * or refused. Restoring it into an empty dir as `snap-<seq>.snap` makes a data dir that a server
 * opens like any other: every key with its revisions and version, every session with its TTL
 * (the session's clock starts when the server starts, as after a restart), no log and no history
 * (watchers resuming from before get a reset).
 */

export interface SnapshotSummary {
  /** Store revision the snapshot is at. */
  revision: number;
  /** Log sequence number it is as of. */
  seq: number;
  keys: number;
  sessions: number;
  bytes: number;
}

/**
 * Read a snapshot file through: every line's checksum and shape (readSnapshot), the counts in the
 * header and the trailer, and the state it describes: keys unique, revisions within the snapshot's,
 * every key's session among its sessions. Throws CorruptDataError naming the file and what is wrong.
 */
export async function verifySnapshotFile(file: string): Promise<SnapshotSummary> {
  const name = basename(file);
  try {
    if (!(await stat(file)).isFile()) throw new InvalidArgumentError(`${file} is not a file`);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new NotFoundError(`snapshot file ${file} not found`);
    throw e;
  }
  const sessions = new Set<string>();
  const keys = new Set<string>();
  let header: SnapshotHeader | undefined;
  let problem: string | undefined;
  const bad = (why: string) => void (problem ??= why);
  const h = await readSnapshot(dirname(file), name, {
    header: (x) => void (header = x),
    lease: (l) => {
      if (sessions.has(l.id)) bad(`session ${l.id} appears twice`);
      sessions.add(l.id);
    },
    kv: (e) => {
      if (keys.has(e.k)) bad(`key ${JSON.stringify(e.k)} appears twice`);
      keys.add(e.k);
      const r = header!.r;
      if (!(e.c >= 1 && e.c <= e.m && e.m <= r && e.n >= 1)) bad(`key ${JSON.stringify(e.k)} has revisions created ${e.c}, modified ${e.m}, version ${e.n} beyond the snapshot's revision ${r}`);
      if (e.l !== undefined && !sessions.has(e.l)) bad(`key ${JSON.stringify(e.k)} is bound to session ${e.l}, which the snapshot does not hold`);
    },
  });
  if (problem !== undefined) throw new CorruptDataError(name, 0, problem);
  return { revision: h.r, seq: h.s, keys: h.keys, sessions: h.leases, bytes: (await stat(file)).size };
}

/**
 * Restore `file` into `dataDir`, which must not exist or be empty (a restore never mixes with
 * existing data). The dir is locked meanwhile (a server cannot start on it halfway), the file is
 * verified, copied as `snap-<seq>.snap` (temporary name, fdatasync, rename, directory fsync) and
 * verified again where it landed. On any failure the dir is left as empty as it was found.
 */
export async function restoreSnapshot(file: string, dataDir: string): Promise<SnapshotSummary & { file: string }> {
  const src = resolve(file);
  const summary = await verifySnapshotFile(src); // before anything is created (verified again where it lands)
  await mkdir(dataDir, { recursive: true });
  const present = await readdir(dataDir);
  if (present.length > 0) {
    throw new RosterError('CONFLICT', `data dir ${dataDir} is not empty (${present.slice(0, 3).join(', ')}${present.length > 3 ? ', ...' : ''}): restore into a new or empty dir, then point the server at it`, {
      details: { dataDir, entries: present.length },
    });
  }
  const lock = await lockDataDir(dataDir);
  const placed: string[] = [];
  try {
    const target = snapshotName(summary.seq);
    const tmp = join(dataDir, `${target}.tmp`);
    placed.push(tmp);
    await pipeline(createReadStream(src), createWriteStream(tmp, { flags: 'wx' }));
    const fh = await open(tmp, 'r+');
    try {
      await fh.datasync();
    } finally {
      await fh.close();
    }
    await rename(tmp, join(dataDir, target));
    placed.push(join(dataDir, target));
    await fsyncDir(dataDir);
    const again = await verifySnapshotFile(join(dataDir, target));
    if (again.revision !== summary.revision || again.keys !== summary.keys) throw new CorruptDataError(target, 0, 'the copy differs from the file it was made from');
    return { ...summary, file: target };
  } catch (e) {
    for (const p of placed) await unlink(p).catch(() => undefined);
    throw e;
  } finally {
    lock.release();
  }
}
