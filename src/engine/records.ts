import { crc32 } from 'node:zlib';
import { RosterError } from '../core/errors.js';

/**
 * What the data dir holds, record by record: typed records, each on its own line with a checksum.
 *
 * A line is `cccccccc <json>\n`: eight lowercase hex digits of the CRC-32 (zlib's, IEEE polynomial)
 * of the JSON text's UTF-8 bytes, one space, the JSON text, a newline. JSON never contains a raw
 * newline (strings escape it), so lines split on '\n' alone, and a reader can always find the next
 * record after a bad one. A line whose checksum, JSON or shape is wrong is never applied.
 *
 * Log segments (wal-<first seq>.log) start with a `segment` header, then log records; snapshots
 * (snap-<seq>.snap) start with a `snapshot` header, then leases and keys, then an `end` trailer
 * that says the file is complete. Both carry the format version.
 *
 * One operation may need several records (a delete with lastValue: a put, then a del; a session
 * ending: a del per key, then a revoke). Every record of such an operation but its last carries
 * `"more":true`, so a group is a run of records with `more` closed by one without. Replay applies
 * a group whole or not at all: a torn tail that keeps only the first records of an operation loses
 * all of it (recovery.ts). Logs written before the field existed have none: each record is then a
 * group of one, as it always was; a roster that predates it reads the field as an unknown one and
 * ignores it (the format version is unchanged).
 */

export const FORMAT_VERSION = 2;

/** A put: the key's whole incarnation (createRevision `c`, version `n`, lease `l`), so a record
 *  alone rebuilds its watch event (history) and replay can check it against the state it lands on. */
export interface PutRecord { t: 'put'; s: number; r: number; k: string; v: string; c: number; n: number; l?: string }
export interface DelRecord { t: 'del'; s: number; r: number; k: string }
export interface GrantRecord { t: 'grant'; s: number; id: string; ttl: number }
/** The lease is gone; its keys were deleted by the `del` records just before it. */
export interface RevokeRecord { t: 'revoke'; s: number; id: string }
/** One change of state, numbered by `s` (gap-free across segments); `more`: the operation it belongs
 *  to goes on in the next record (see above). */
export type LogRecord = (PutRecord | DelRecord | GrantRecord | RevokeRecord) & { more?: true };

export interface SegmentHeader { t: 'segment'; v: number; first: number }

/** State as of log record `s`, at store revision `r`. */
export interface SnapshotHeader { t: 'snapshot'; v: number; s: number; r: number; keys: number; leases: number }
export interface LeaseEntry { t: 'lease'; id: string; ttl: number }
export interface KvEntry { t: 'kv'; k: string; v: string; c: number; m: number; n: number; l?: string }
export interface SnapshotEnd { t: 'end'; keys: number; leases: number }
export type SnapshotRecord = SnapshotHeader | LeaseEntry | KvEntry | SnapshotEnd;

/** A data file that cannot be read as written: names the file and the byte offset of the bad record. */
export class CorruptDataError extends RosterError {
  constructor(
    readonly file: string,
    readonly offset: number,
    readonly reason: string,
    hint = '',
  ) {
    super('INTERNAL', `corrupt data in ${file} at byte offset ${offset}: ${reason}${hint}`, { details: { file, offset, reason } });
  }
}

// ------------------------------------------------------------------ encoding

/** Written where a line's checksum goes, filled in by sealLines once the batch is one buffer. */
export const UNSEALED = '00000000 ';
const HEX = Buffer.from('0123456789abcdef');

/** A record's JSON text, or its pieces in order (a big value is kept apart rather than copied
 *  into one string: a 1 MiB value is then copied once, into the batch buffer). */
export type RecordText = string | string[];

/** Closes the JSON of a record whose operation goes on in the next record. */
export const MORE_END = ',"more":true}';

export function putJson(s: number, r: number, k: string, v: string, c: number, n: number, l: string | undefined, more: boolean): RecordText {
  const head = `{"t":"put","s":${s},"r":${r},"k":${JSON.stringify(k)},"v":`;
  const tail = `,"c":${c},"n":${n}${l === undefined ? '' : `,"l":${JSON.stringify(l)}`}${more ? MORE_END : '}'}`;
  return v.length > 4096 ? [head, JSON.stringify(v), tail] : head + JSON.stringify(v) + tail;
}

export function delJson(s: number, r: number, k: string, more: boolean): string {
  return `{"t":"del","s":${s},"r":${r},"k":${JSON.stringify(k)}${more ? MORE_END : '}'}`;
}

export function grantJson(s: number, id: string, ttl: number): string {
  return `{"t":"grant","s":${s},"id":${JSON.stringify(id)},"ttl":${ttl}}`;
}

export function revokeJson(s: number, id: string): string {
  return `{"t":"revoke","s":${s},"id":${JSON.stringify(id)}}`;
}

/** One complete line for `value` (used off the hot path: headers, snapshots). */
export function line(value: object): string {
  const json = JSON.stringify(value);
  return `${hex8(crc32(json))} ${json}\n`;
}

function hex8(n: number): string {
  return n.toString(16).padStart(8, '0');
}

/** One buffer of complete lines for `records` (after an optional header), checksums filled in. */
export function encodeBatch(records: readonly RecordText[], header: string | undefined): Buffer {
  let buf: Buffer;
  if (records.every((r) => typeof r === 'string')) {
    // The common case, small records: one conversion of one string.
    const body = UNSEALED + (records as string[]).join('\n' + UNSEALED) + '\n';
    buf = Buffer.from(header === undefined ? body : `${UNSEALED}${header}\n${body}`);
  } else {
    // Big values: each piece copied once, straight into the buffer.
    let size = header === undefined ? 0 : 10 + Buffer.byteLength(header);
    for (const r of records) {
      size += 10; // checksum, space, newline
      if (typeof r === 'string') size += Buffer.byteLength(r);
      else for (const piece of r) size += Buffer.byteLength(piece);
    }
    buf = Buffer.allocUnsafe(size);
    let off = 0;
    for (const r of header === undefined ? records : [header, ...records]) {
      off += buf.write(UNSEALED, off, 'latin1');
      if (typeof r === 'string') off += buf.write(r, off);
      else for (const piece of r) off += buf.write(piece, off);
      buf[off++] = 10;
    }
  }
  sealLines(buf);
  return buf;
}

/**
 * Fill in the checksum of every line of `buf`, each of which starts with UNSEALED. Done on the
 * batch buffer rather than per record string, so each record is converted to UTF-8 once.
 */
export function sealLines(buf: Buffer): void {
  let pos = 0;
  while (pos < buf.length) {
    const nl = buf.indexOf(10, pos);
    let c = crc32(buf.subarray(pos + 9, nl));
    for (let i = pos + 7; i >= pos; i--) {
      buf[i] = HEX[c & 15]!;
      c >>>= 4;
    }
    pos = nl + 1;
  }
}

// ------------------------------------------------------------------ decoding

export type Decoded = { ok: true; value: Record<string, unknown> } | { ok: false; reason: string };

/** Check and parse the line buf[start, end) (without its newline). */
export function decodeLine(buf: Buffer, start: number, end: number): Decoded {
  if (end - start < 11 || buf[start + 8] !== 32) return { ok: false, reason: 'not a checksummed record' };
  let want = 0;
  for (let i = start; i < start + 8; i++) {
    const ch = buf[i]!;
    const d = ch >= 48 && ch <= 57 ? ch - 48 : ch >= 97 && ch <= 102 ? ch - 87 : -1;
    if (d < 0) return { ok: false, reason: 'not a checksummed record' };
    want = want * 16 + d;
  }
  const got = crc32(buf.subarray(start + 9, end));
  if (got !== want) return { ok: false, reason: `checksum mismatch (stored ${hex8(want)}, computed ${hex8(got)})` };
  let value: unknown;
  try {
    value = JSON.parse(buf.toString('utf8', start + 9, end));
  } catch (e) {
    return { ok: false, reason: `checksum matches but JSON does not parse: ${(e as Error).message}` };
  }
  if (value === null || typeof value !== 'object' || Array.isArray(value)) return { ok: false, reason: 'record is not an object' };
  return { ok: true, value: value as Record<string, unknown> };
}

const isSeq = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) > 0;
const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
const isStr = (v: unknown): v is string => typeof v === 'string';
const isOptStr = (v: unknown): boolean => v === undefined || typeof v === 'string';

/** The record, or why it is not a valid log record. */
export function asLogRecord(o: Record<string, unknown>): LogRecord | string {
  if (o.more !== undefined && o.more !== true) return `malformed ${JSON.stringify(o.t)?.slice(0, 40)} record (more is not true)`;
  switch (o.t) {
    case 'put':
      return isSeq(o.s) && isSeq(o.r) && isStr(o.k) && isStr(o.v) && isSeq(o.c) && isSeq(o.n) && isOptStr(o.l) ? (o as unknown as PutRecord) : 'malformed put record';
    case 'del':
      return isSeq(o.s) && isSeq(o.r) && isStr(o.k) ? (o as unknown as DelRecord) : 'malformed del record';
    case 'grant':
      return isSeq(o.s) && isStr(o.id) && isSeq(o.ttl) ? (o as unknown as GrantRecord) : 'malformed grant record';
    case 'revoke':
      return isSeq(o.s) && isStr(o.id) ? (o as unknown as RevokeRecord) : 'malformed revoke record';
    default:
      return `unknown record type ${JSON.stringify(o.t)?.slice(0, 40)}`;
  }
}

export function asSegmentHeader(o: Record<string, unknown>): SegmentHeader | string {
  if (o.t !== 'segment' || !isSeq(o.first)) return 'missing segment header';
  if (o.v !== FORMAT_VERSION) return `unsupported segment format version ${JSON.stringify(o.v)} (this roster reads ${FORMAT_VERSION})`;
  return o as unknown as SegmentHeader;
}

export function asSnapshotRecord(o: Record<string, unknown>): SnapshotRecord | string {
  switch (o.t) {
    case 'snapshot':
      if (o.v !== FORMAT_VERSION) return `unsupported snapshot format version ${JSON.stringify(o.v)} (this roster reads ${FORMAT_VERSION})`;
      return isCount(o.s) && isCount(o.r) && isCount(o.keys) && isCount(o.leases) ? (o as unknown as SnapshotHeader) : 'malformed snapshot header';
    case 'lease':
      return isStr(o.id) && isSeq(o.ttl) ? (o as unknown as LeaseEntry) : 'malformed lease entry';
    case 'kv':
      return isStr(o.k) && isStr(o.v) && isSeq(o.c) && isSeq(o.m) && isSeq(o.n) && isOptStr(o.l) ? (o as unknown as KvEntry) : 'malformed kv entry';
    case 'end':
      return isCount(o.keys) && isCount(o.leases) ? (o as unknown as SnapshotEnd) : 'malformed snapshot trailer';
    default:
      return `unknown snapshot entry type ${JSON.stringify(o.t)?.slice(0, 40)}`;
  }
}
