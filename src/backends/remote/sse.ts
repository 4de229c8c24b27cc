/**
 * Incremental Server-Sent Events parser (the subset of the WHATWG algorithm roster needs: `event`,
 * `data` (multi-line joined by '\n'), `id`, comments; LF or CRLF line ends; a leading BOM is
 * skipped). Feed it byte chunks in order; it calls `onEvent` once per complete event. A partial
 * event at the end of a connection is never dispatched, so a torn stream cannot deliver half a
 * frame.
 *
 * It works on the bytes, not on a decoded copy of the chunk: lines are found with indexOf on the
 * Buffer (a '\n' byte never occurs inside a UTF-8 sequence, so splitting there is safe), only a
 * `data` value is decoded (once, straight to the string JSON.parse reads; the same bytes as the
 * last ones any parser of the process decoded give the same string, see Interned), and the event
 * names roster's server sends are interned constants. A watcher receiving one small frame per chunk
 * thus allocates nothing here when another watcher of the process got that frame first. Cost stays linear in the input: a line spread
 * over many chunks is kept as parts and joined once.
 */
export type SseHandler = (event: string, data: string, id: string | undefined) => void;

/** Bytes [s, s + lit.length) of `b` are the ASCII text `lit`. */
function eq(b: Buffer, s: number, lit: string): boolean {
  for (let i = 0; i < lit.length; i++) if (b[s + i] !== lit.charCodeAt(i)) return false;
  return true;
}

const EVENTS = ['put', 'delete', 'snapshot', 'synced', 'reset'];

/** The event names roster's server sends, without building a string for them. */
function knownEvent(b: Buffer, s: number, e: number): string | undefined {
  for (const name of EVENTS) if (name.length === e - s && eq(b, s, name)) return name;
  return undefined;
}

/**
 * The last value decoded for a field, shared by every parser of the process: when many watchers
 * in one process receive the same event (the server sends each of them the same bytes), all but
 * the first get the string the first one decoded, after a byte comparison, so the frame costs one
 * string, and one JSON.parse where the caller memoises by string (watch.ts), instead of one per
 * watcher. Only short values: a snapshot is neither repeated nor worth a copy.
 */
class Interned {
  private bytes = Buffer.alloc(0);
  private text = '';
  constructor(private readonly max: number) {}

  get(b: Buffer, s: number, e: number): string {
    const n = e - s;
    if (n === this.bytes.length && b.compare(this.bytes, 0, n, s, e) === 0) return this.text;
    const text = b.toString('utf8', s, e);
    if (n <= this.max) {
      this.bytes = Buffer.from(b.subarray(s, e));
      this.text = text;
    }
    return text;
  }
}

const DATA = new Interned(16 * 1024);
const ID = new Interned(64);

export class SseParser {
  /** Bytes of a line not yet complete (copied: a chunk's memory is not ours to keep). */
  private parts: Buffer[] = [];
  private started = false;
  private event = '';
  private data: string | undefined;
  private id: string | undefined;

  constructor(
    private readonly onEvent: SseHandler,
    private readonly onComment?: (text: string) => void,
  ) {}

  push(chunk: Uint8Array): void {
    let b = Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let start = 0;
    if (!this.started) {
      if (this.parts.length > 0) {
        b = Buffer.concat([...this.parts, b]);
        this.parts = [];
      }
      if (b.length === 0) return;
      if (b.length < 3 && b[0] === 0xef && (b.length < 2 || b[1] === 0xbb)) {
        // A prefix of the BOM: too short to tell a BOM from text yet.
        this.parts.push(Buffer.from(b));
        return;
      }
      this.started = true;
      if (b[0] === 0xef && b[1] === 0xbb && b[2] === 0xbf) start = 3;
    }
    if (this.parts.length > 0) {
      const nl = b.indexOf(10, start);
      if (nl < 0) {
        this.parts.push(Buffer.from(b.subarray(start)));
        return;
      }
      this.parts.push(b.subarray(start, nl));
      const line = Buffer.concat(this.parts);
      this.parts = [];
      this.line(line, 0, line.length);
      start = nl + 1;
    }
    for (;;) {
      const nl = b.indexOf(10, start);
      if (nl < 0) break;
      this.line(b, start, nl);
      start = nl + 1;
    }
    if (start < b.length) this.parts.push(Buffer.from(b.subarray(start)));
  }

  /** One line: bytes [s, e) of `b`, without its '\n'. */
  private line(b: Buffer, s: number, e: number): void {
    if (e > s && b[e - 1] === 13 /* '\r' */) e--;
    if (e === s) {
      const data = this.data;
      const event = this.event || 'message';
      this.data = undefined;
      this.event = '';
      if (data !== undefined) this.onEvent(event, data, this.id);
      return;
    }
    if (b[s] === 58 /* ':' */) {
      this.onComment?.(b.toString('utf8', s + 1, e)); // comment (heartbeat)
      return;
    }
    let colon = s;
    while (colon < e && b[colon] !== 58) colon++;
    let v = colon + 1;
    if (v < e && b[v] === 32 /* ' ' */) v++;
    if (v > e) v = e;
    switch (colon - s) {
      case 4: // data
        if (eq(b, s, 'data')) {
          const value = DATA.get(b, v, e);
          this.data = this.data === undefined ? value : `${this.data}\n${value}`;
        }
        return;
      case 5: // event (or retry: nothing to do for this client)
        if (eq(b, s, 'event')) this.event = knownEvent(b, v, e) ?? b.toString('utf8', v, e);
        return;
      case 2: // id (ignored if it holds a NUL, as the standard says)
        if (eq(b, s, 'id')) {
          let c = v;
          while (c < e && b[c] !== 0) c++;
          if (c === e) this.id = ID.get(b, v, e);
        }
        return;
      default:
        return; // unknown field
    }
  }
}
