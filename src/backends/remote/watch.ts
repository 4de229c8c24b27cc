import type { ListResult, WatchEvent } from '../../core/kv.js';
import { resume, Terminal, type WatchStream } from '../../contract/stream.js';
import { RosterError, UnavailableError } from '../../core/errors.js';
import { SseParser } from './sse.js';
import { errorOfReply, type Transport } from './transport.js';

/**
 * One watch over the server's SSE endpoint, fed by successive connections (the reconnect loop is
 * the contract's `resume`). `last` is the revision the consumer's view is complete at; every
 * reconnect asks for exactly the events after it, and events at or below it are dropped, so
 * reconnects never duplicate or skip. Liveness comes from the server's heartbeats: a stream silent
 * for 2.5 heartbeat intervals is presumed dead and resumed.
 */
export function remoteWatch(t: Transport, stream: WatchStream, prefix: string, fromRevision: number | undefined, backoff: { baseMs: number; capMs: number }): void {
  let last = fromRevision;
  let connects = 0;
  let lastError: unknown;
  // Diagnostics for callers that want them (e.g. a test counting reconnects): not part of Watch.
  Object.defineProperties(stream, {
    reconnects: { get: () => Math.max(0, connects - 1) },
    lastError: { get: () => lastError },
  });
  let conn: AbortController | undefined;
  stream.onStop(() => conn?.abort());

  const onFrame = (event: string, data: string): void => {
    switch (event) {
      case 'snapshot':
      case 'reset': {
        const s = parseFrame(event, data) as ListResult;
        if (typeof s.revision !== 'number' || !Array.isArray(s.items)) throw new Terminal(badFrame(event, data));
        if (event === 'snapshot') {
          for (const kv of s.items) stream.push({ type: 'put', key: kv.key, kv, revision: s.revision });
        } else {
          stream.push({ type: 'reset', revision: s.revision, items: s.items });
        }
        // `synced` is emitted here, with its snapshot, so a connection lost between the two frames
        // cannot leave the consumer with a snapshot that is never marked complete.
        stream.push({ type: 'synced', revision: s.revision });
        last = s.revision;
        return;
      }
      case 'put':
      case 'delete': {
        const ev = parseEvent(event, data);
        if (last !== undefined && ev.revision <= last) return; // already delivered
        stream.push(ev);
        last = ev.revision;
        return;
      }
      default:
        // `synced` (already emitted with its snapshot) and event types from newer servers.
        return;
    }
  };

  /** One SSE connection, until it ends or fails. */
  const connect = async (up: () => void): Promise<void> => {
    const c = new AbortController();
    conn = c;
    if (stream.ended) return;
    let path = `/api/v1/watch?prefix=${encodeURIComponent(prefix)}`;
    if (last !== undefined) path += `&fromRevision=${last}`;
    connects++;
    const parser = new SseParser(onFrame);
    // Liveness: a flag the data callback sets and the idle timer clears, rather than a clock read
    // per chunk.
    let heard = true;
    let idle: NodeJS.Timeout | undefined;
    let reply: { status: number; text: string };
    try {
      reply = await t.stream(path, c.signal, {
        open: (headers) => {
          up();
          const hb = Number(headers['roster-heartbeat-ms']);
          const idleLimit = (Number.isFinite(hb) && hb > 0 ? hb : 15_000) * 2.5;
          // Silent for a whole check period at least idleLimit long: presumed dead.
          const every = Math.max(50, idleLimit / 4);
          let silentFor = 0;
          idle = setInterval(() => {
            if (heard) {
              heard = false;
              silentFor = 0;
            } else if ((silentFor += every) >= idleLimit) {
              c.abort(new UnavailableError(`watch stream silent for ${Math.round(idleLimit)} ms`));
            }
          }, every);
          idle.unref();
        },
        data: (chunk) => {
          heard = true;
          parser.push(chunk);
          if (stream.ended) c.abort(STOPPED);
        },
      });
    } catch (e) {
      if (e === STOPPED || stream.ended) return;
      if (e instanceof Terminal) throw e;
      throw (lastError = c.signal.aborted && c.signal.reason instanceof RosterError ? c.signal.reason : t.error(e));
    } finally {
      if (idle) clearInterval(idle);
    }
    if (reply.status !== 200) {
      const err = errorOfReply(reply.status, reply.text);
      // A request the server rejects (bad prefix, unknown endpoint) will not get better by retrying.
      if (reply.status >= 400 && reply.status < 500) throw new Terminal(err);
      throw (lastError = err);
    }
    if (!stream.ended) throw (lastError = new UnavailableError('watch stream ended by the server'));
  };

  void resume(stream, connect, backoff);
}

/** The consumer went away: the connection is dropped, nothing is reported. */
const STOPPED = new Error('watch stopped');

function badFrame(event: string, data: string): RosterError {
  return new RosterError('INTERNAL', `malformed ${event} event from roster server: ${JSON.stringify(data.slice(0, 200))}`);
}

/**
 * The last put/delete event decoded in this process, shared by every watch that receives the same
 * frame (the SSE parser hands them the same string: sse.ts), so N watchers of one process parse an
 * event once. Shared, so frozen, as the engine's own events are (engine/watchers.ts).
 */
let lastData = '';
let lastEvent: WatchEvent | undefined;

function parseEvent(event: string, data: string): WatchEvent {
  if (data === lastData && lastEvent !== undefined && lastEvent.type === event) return lastEvent;
  const ev = parseFrame(event, data) as WatchEvent;
  if (ev === null || typeof ev !== 'object' || typeof ev.revision !== 'number' || ev.type !== event) throw new Terminal(badFrame(event, data));
  const kv: unknown = ev.type === 'put' ? ev.kv : (ev as { prev?: unknown }).prev;
  if (kv !== null && typeof kv === 'object') Object.freeze(kv);
  lastData = data;
  lastEvent = Object.freeze(ev);
  return ev;
}

function parseFrame(event: string, data: string): unknown {
  try {
    return JSON.parse(data);
  } catch (e) {
    throw new Terminal(new RosterError('INTERNAL', `malformed ${event} event from roster server: not JSON`, { cause: e }));
  }
}
