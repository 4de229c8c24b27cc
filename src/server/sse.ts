import type { ServerResponse } from 'node:http';
import type { Engine, EngineEvent, Subscription } from '../engine/engine.js';
import { sseFrame, writeOpening, type OpeningStream } from './watch-stream.js';
import { isReserved, rangeHasReserved } from './auth/store.js';

const HEARTBEAT = Buffer.from(':\n\n');

class SseStream implements OpeningStream {
  closed = false;
  /** Set once its snapshot or backlog is written (watch-stream.ts). */
  live = false;
  sub: Subscription | undefined;
  constructor(
    readonly res: ServerResponse,
    /** The prefix covers the server's reserved keys (auth/store.ts): those events are left out. */
    readonly filtered: boolean,
    /** Frees the stream's quota slot; called once when it ends. */
    readonly release: () => void,
  ) {}
}

/**
 * Every open Server-Sent Events stream of the server. Heartbeats are SSE comments (the interval is
 * announced in the `roster-heartbeat-ms` header) so clients detect dead connections. Each engine
 * event is encoded once for all streams (the engine delivers one event to every subscriber in a
 * row). A client that falls more than `maxBuffer` bytes behind is cut: it resumes by revision
 * instead of holding unbounded memory here.
 */
export class SseHub {
  private readonly streams = new Set<SseStream>();
  /** Streams cut for reading too slowly. */
  dropped = 0;
  private lastEvent: EngineEvent | undefined;
  private lastFrame: Buffer = HEARTBEAT;

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
    const sub = engine.subscribe(prefix, from, (ev) => this.send(s, ev), { streamBacklog: true });
    s.sub = sub;
    this.streams.add(s);
    res.on('close', () => {
      s.closed = true;
      this.drop(s);
    });
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
    writeOpening(engine, s, sub, prefix, from, () => this.end(s, false)).catch((e: unknown) => {
      this.onError(e);
      this.end(s, true);
    });
  }

  private send(s: SseStream, ev: EngineEvent): void {
    if (!s.live) return; // still writing its opening, which reads this event from history
    if (s.filtered && isReserved(ev.key)) return;
    if (ev !== this.lastEvent) {
      this.lastEvent = ev;
      this.lastFrame = Buffer.from(sseFrame(ev.type, ev.revision, JSON.stringify(ev)));
    }
    this.write(s, this.lastFrame);
  }

  private write(s: SseStream, chunk: Buffer): void {
    if (s.closed) return;
    s.res.write(chunk);
    if (s.res.writableLength > this.maxBuffer) {
      this.dropped++;
      this.end(s, true);
    }
  }

  /** One heartbeat comment on every stream. */
  beat(): void {
    // (A stream writing its opening is busy sending; a comment must not split its snapshot frame.)
    for (const s of this.streams) if (s.live) this.write(s, HEARTBEAT);
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
