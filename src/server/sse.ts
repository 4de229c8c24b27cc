import type { ServerResponse } from 'node:http';
import type { EngineEvent, Subscription } from '../engine/engine.js';

const HEARTBEAT = Buffer.from(':\n\n');

/** One SSE frame: `id:` = revision (what `Last-Event-ID` resumes from), the event type, its data. */
export function frame(type: string, id: number, data: string): string {
  return `id: ${id}\nevent: ${type}\ndata: ${data}\n\n`;
}

class SseStream {
  closed = false;
  sub: Subscription | undefined;
  /** Bytes of the initial snapshot/backlog: allowed on top of the slow-consumer limit. */
  base = 0;
  constructor(readonly res: ServerResponse) {}
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
  ) {}

  get size(): number {
    return this.streams.size;
  }

  /**
   * Start a stream on `res`: `subscribe` attaches the engine subscription (its events go to the
   * stream), `initial` is written first (snapshot or backlog frames), then events as they commit.
   */
  open(res: ServerResponse, subscribe: (send: (ev: EngineEvent) => void) => Subscription, initial: (sub: Subscription) => string): void {
    const s = new SseStream(res);
    const sub = subscribe((ev) => this.send(s, ev));
    s.sub = sub;
    this.streams.add(s);
    res.on('close', () => {
      s.closed = true;
      this.drop(s);
    });
    // The subscription delivers events only from later engine commits, so nothing can slip in
    // between subscribing and writing the initial frames.
    const first = 'retry: 1000\n\n' + initial(sub);
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
    s.base = first.length;
    res.write(first);
  }

  private send(s: SseStream, ev: EngineEvent): void {
    if (ev !== this.lastEvent) {
      this.lastEvent = ev;
      this.lastFrame = Buffer.from(frame(ev.type, ev.revision, JSON.stringify(ev)));
    }
    this.write(s, this.lastFrame);
  }

  private write(s: SseStream, chunk: Buffer): void {
    if (s.closed) return;
    s.res.write(chunk);
    if (s.res.writableLength > s.base + this.maxBuffer) {
      this.dropped++;
      this.end(s, true);
    }
  }

  /** One heartbeat comment on every stream. */
  beat(): void {
    for (const s of this.streams) this.write(s, HEARTBEAT);
  }

  private drop(s: SseStream): void {
    s.sub?.cancel();
    this.streams.delete(s);
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
