import type { ServerResponse } from 'node:http';
import type { Writable } from 'node:stream';
import type { Engine, EngineEvent, Subscription } from '../engine/engine.js';
import { sseFrame, writeOpening, type OpeningStream } from './watch-stream.js';
import { isReserved, rangeHasReserved } from './auth/store.js';

const HEARTBEAT = Buffer.from(':\n\n');

class SseStream implements OpeningStream {
  closed = false;
  /** Set once its snapshot or backlog is written (watch-stream.ts). */
  live = false;
  sub: Subscription | undefined;
  /** Where live events go: the socket itself once the opening is written (see goLive). */
  out: Writable;
  /** Frames of the batch being delivered, written at its end (SseHub.flush). */
  pending: Buffer[] = [];
  constructor(
    readonly res: ServerResponse,
    /** The prefix covers the server's reserved keys (auth/store.ts): those events are left out. */
    readonly filtered: boolean,
    /** Frees the stream's quota slot; called once when it ends. */
    readonly release: () => void,
  ) {
    this.out = res;
  }

  /**
   * The opening is written: from now on events are written to the socket directly. The body is
   * close-delimited (no chunked framing), so the bytes of an event on the socket are the frame
   * itself, and the response object's per-write work (corking the socket, uncorking it on the next
   * tick, its own bookkeeping) would buy nothing. Only when nothing of this response is held in
   * the response object (its socket is its own, not still serving an earlier pipelined reply).
   */
  goLive(): void {
    const sock = this.res.socket;
    if (sock && !sock.destroyed && this.res.writableLength === sock.writableLength) this.out = sock;
  }
}

/**
 * Every open Server-Sent Events stream of the server. Heartbeats are SSE comments (the interval is
 * announced in the `roster-heartbeat-ms` header) so clients detect dead connections. Each engine
 * event is encoded once for all streams (the engine delivers one event to every subscriber in a
 * row). The frames of one published batch are written to each stream together, in one socket
 * write, once the engine has delivered the batch to its watch streams (and before its own views
 * get it: Engine.onBatchDelivered), so that a batch reaches a client in one piece. A client that
 * falls more than `maxBuffer` bytes behind is cut: it resumes by revision instead of holding
 * unbounded memory here.
 */
export class SseHub {
  private readonly streams = new Set<SseStream>();
  /** Streams cut for reading too slowly. */
  dropped = 0;
  private lastEvent: EngineEvent | undefined;
  private lastFrame: Buffer = HEARTBEAT;
  /** Event streams another module writes (session channels): they get the heartbeats too. */
  private readonly adopted = new Set<ServerResponse>();
  /** Streams with frames of the batch being delivered. */
  private dirty: SseStream[] = [];
  /** Engines whose batches end with flush(). */
  private readonly hooked = new Set<Engine>();

  constructor(
    readonly heartbeatMs: number,
    private readonly maxBuffer: number,
    private readonly onError: (err: unknown) => void,
  ) {}

  get size(): number {
    return this.streams.size;
  }

  /**
   * Start a stream on `res` watching `prefix` of `engine`, from a snapshot (`from` undefined) or
   * resumed after revision `from`. The opening (snapshot, reset or backlog) is streamed from the
   * engine's history in pieces (watch-stream.ts); live events follow once it is written.
   */
  open(res: ServerResponse, engine: Engine, prefix: string, from: number | undefined, release: () => void = () => undefined): void {
    const s = new SseStream(res, rangeHasReserved(prefix), release);
    if (!this.hooked.has(engine)) {
      this.hooked.add(engine);
      engine.onBatchDelivered(() => this.flush());
    }
    const sub = engine.subscribe(prefix, from, (ev) => this.send(s, ev), { streamBacklog: true });
    s.sub = sub;
    this.streams.add(s);
    res.on('close', () => {
      s.closed = true;
      this.drop(s);
    });
    this.head(res);
    writeOpening(engine, s, sub, prefix, from, () => this.end(s, false)).catch((e: unknown) => {
      this.onError(e);
      this.end(s, true);
    });
  }

  /** Start an event stream on `res` that another module writes (a session channel's): the same
   *  head as a watch stream's, and the hub's heartbeats until it closes. */
  adopt(res: ServerResponse): void {
    this.head(res);
    this.adopted.add(res);
    res.on('close', () => this.adopted.delete(res));
  }

  private head(res: ServerResponse): void {
    // A close-delimited body rather than chunked encoding: each event is then one socket write of
    // one buffer, encoded once for every stream. HTTP/1.1 allows it for a reply without a length;
    // an event stream ends with its connection anyway.
    res.useChunkedEncodingByDefault = false;
    res.writeHead(200, [
      'content-type', 'text/event-stream; charset=utf-8',
      'cache-control', 'no-store',
      'x-accel-buffering', 'no',
      'roster-heartbeat-ms', String(this.heartbeatMs),
    ]);
  }

  private send(s: SseStream, ev: EngineEvent): void {
    if (!s.live) return; // still writing its opening, which reads this event from history
    if (s.filtered && isReserved(ev.key)) return;
    if (ev !== this.lastEvent) {
      this.lastEvent = ev;
      this.lastFrame = Buffer.from(sseFrame(ev.type, ev.revision, JSON.stringify(ev)));
    }
    if (s.pending.length === 0) this.dirty.push(s);
    s.pending.push(this.lastFrame);
  }

  /** Write every stream's frames of the batch just delivered: one write (writev) per stream. */
  private flush(): void {
    if (this.dirty.length === 0) return;
    const dirty = this.dirty;
    this.dirty = [];
    for (const s of dirty) {
      const frames = s.pending;
      s.pending = [];
      this.write(s, frames);
    }
  }

  /** Write `chunks` (one write, or one writev when several), then cut the stream if its client
   *  has fallen more than maxBuffer bytes behind. */
  private write(s: SseStream, chunks: Buffer | Buffer[]): void {
    if (s.closed) return;
    const out = s.out;
    if (!Array.isArray(chunks)) out.write(chunks);
    else if (chunks.length === 1) out.write(chunks[0]!);
    else {
      out.cork();
      for (const c of chunks) out.write(c);
      out.uncork();
    }
    if (out.writableLength > this.maxBuffer) {
      this.dropped++;
      this.end(s, true);
    }
  }

  /** One heartbeat comment on every stream. */
  beat(): void {
    // (A stream writing its opening is busy sending; a comment must not split its snapshot frame.)
    for (const s of this.streams) if (s.live) this.write(s, HEARTBEAT);
    for (const res of this.adopted) if (!res.destroyed) res.write(HEARTBEAT);
  }

  private drop(s: SseStream): void {
    s.sub?.cancel();
    this.streams.delete(s);
    s.release();
  }

  private end(s: SseStream, destroy: boolean): void {
    if (s.closed) return;
    s.closed = true;
    this.drop(s);
    if (destroy) s.res.destroy();
    else s.res.end();
  }

  /** End every stream: gracefully (clients resume elsewhere / later) or by destroying it. */
  endAll(destroy: boolean): void {
    for (const s of [...this.streams]) this.end(s, destroy);
  }
}
