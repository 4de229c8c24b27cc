import { open, readdir } from 'node:fs/promises';

/**
 * The data dir's files and the plain I/O the log, the snapshots and recovery share.
 *
 *   LOCK                       who holds the dir (see lock.ts)
 *   wal-<first seq>.log        log segments, named by the sequence number of their first record
 *   snap-<seq>.snap            snapshots: the whole state as of log record <seq>
 *   *.tmp                      a snapshot being written; removed on open
 *   lost+found/                what `--recover` cut out of a corrupt log, kept for inspection
 *   wal.log, snapshot.json     the format before version 2; migrated on open (legacy.ts)
 */

const SEQ_DIGITS = 16;

export function segmentName(first: number): string {
  return `wal-${String(first).padStart(SEQ_DIGITS, '0')}.log`;
}

export function snapshotName(seq: number): string {
  return `snap-${String(seq).padStart(SEQ_DIGITS, '0')}.snap`;
}

export interface DirListing {
  /** Segments by first sequence number, ascending. */
  segments: { file: string; first: number }[];
  /** Snapshots by sequence number, ascending. */
  snapshots: { file: string; seq: number }[];
  tmp: string[];
  legacyLog: boolean;
  legacySnapshot: boolean;
}

export async function listDataDir(dir: string): Promise<DirListing> {
  const out: DirListing = { segments: [], snapshots: [], tmp: [], legacyLog: false, legacySnapshot: false };
  for (const name of await readdir(dir)) {
    let m: RegExpExecArray | null;
    if ((m = /^wal-(\d{16})\.log$/.exec(name))) out.segments.push({ file: name, first: Number(m[1]) });
    else if ((m = /^snap-(\d{16})\.snap$/.exec(name))) out.snapshots.push({ file: name, seq: Number(m[1]) });
    else if (name.endsWith('.tmp')) out.tmp.push(name);
    else if (name === 'wal.log') out.legacyLog = true;
    else if (name === 'snapshot.json') out.legacySnapshot = true;
  }
  out.segments.sort((a, b) => a.first - b.first);
  out.snapshots.sort((a, b) => a.seq - b.seq);
  return out;
}

/** Make the directory's entries (created, renamed, removed files) durable. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** Called for each complete line buf[start, end) (newline excluded) at byte `offset` of the file.
 *  Return false to stop reading. */
export type LineVisitor = (buf: Buffer, start: number, end: number, offset: number) => boolean | void;

export interface ScanResult {
  /** File size in bytes. */
  size: number;
  /** Offset just past the last line visited (where a stopped visit's line begins, if stopped). */
  end: number;
  stopped: boolean;
}

const CHUNK = 4 * 1024 * 1024;

/**
 * Read a file line by line in 4 MiB chunks, so a long log is never one string in memory. Bytes after
 * the last newline (a line cut short) are not visited: `size - end` of them.
 */
export async function scanLines(path: string, visit: LineVisitor): Promise<ScanResult> {
  const fh = await open(path, 'r');
  try {
    const size = (await fh.stat()).size;
    let buf = Buffer.allocUnsafe(Math.min(CHUNK, Math.max(size, 1)));
    let have = 0; // bytes of buf in use
    let base = 0; // file offset of buf[0]
    let pos = 0; // file offset read so far
    while (pos < size) {
      if (have === buf.length) {
        // A line longer than the buffer: grow it.
        const bigger = Buffer.allocUnsafe(buf.length * 2);
        buf.copy(bigger, 0, 0, have);
        buf = bigger;
      }
      const { bytesRead } = await fh.read(buf, have, Math.min(buf.length - have, size - pos), pos);
      if (bytesRead === 0) break;
      have += bytesRead;
      pos += bytesRead;
      const view = buf.subarray(0, have);
      let start = 0;
      for (;;) {
        const nl = view.indexOf(10, start);
        if (nl < 0) break;
        if (visit(view, start, nl, base + start) === false) return { size, end: base + start, stopped: true };
        start = nl + 1;
      }
      // Keep the unfinished line at the front of the buffer.
      buf.copy(buf, 0, start, have);
      have -= start;
      base += start;
    }
    return { size, end: base, stopped: false };
  } finally {
    await fh.close();
  }
}
