import type { Dispatcher } from 'undici';
import type { ListResult, WatchEvent } from '../../core/kv.js';
import { resume, Terminal, type WatchStream } from '../../contract/stream.js';
import { errorFromJSON, RosterError, UnavailableError } from '../../core/errors.js';
import { SseParser } from './sse.js';
import { replyError, type Transport } from './transport.js';

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
        const ev = parseFrame(event, data) as WatchEvent;
        if (typeof ev.revision !== 'number' || ev.type !== event) throw new Terminal(badFrame(event, data));
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
    let res: Dispatcher.ResponseData;
    try {
      res = await t.stream(path, c.signal);
    } catch (e) {
      throw (lastError = t.error(e));
    }
    if (res.statusCode !== 200) {
      const text = await res.body.text().catch((e: unknown) => `(body unreadable: ${String(e)})`);
      let err: RosterError;
      try {
        const d = JSON.parse(text) as { error?: unknown };
        err = d.error && typeof d.error === 'object' ? errorFromJSON(d.error, res.statusCode) : replyError(res.statusCode, text);
      } catch (e) {
        err = replyError(res.statusCode, text, e);
      }
      // A request the server rejects (bad prefix, unknown endpoint) will not get better by retrying.
      if (res.statusCode >= 400 && res.statusCode < 500) throw new Terminal(err);
      throw (lastError = err);
    }
    up();
    const hb = Number(res.headers['roster-heartbeat-ms']);
    const idleLimit = (Number.isFinite(hb) && hb > 0 ? hb : 15_000) * 2.5;
    let lastData = Date.now();
    const idle = setInterval(() => {
      if (Date.now() - lastData > idleLimit) c.abort(new UnavailableError(`watch stream silent for ${Math.round(idleLimit)} ms`));
    }, Math.max(50, idleLimit / 4));
    idle.unref();
    const parser = new SseParser(onFrame);
    try {
      for await (const chunk of res.body) {
        lastData = Date.now();
        parser.push(chunk as Buffer);
        if (stream.ended) return;
      }
    } catch (e) {
      if (e instanceof Terminal) throw e;
      throw (lastError = c.signal.aborted && c.signal.reason instanceof RosterError ? c.signal.reason : t.error(e));
    } finally {
      clearInterval(idle);
      if (!res.body.destroyed) res.body.destroy();
    }
    if (!stream.ended) throw (lastError = new UnavailableError('watch stream ended by the server'));
  };

  void resume(stream, connect, backoff);
}

function badFrame(event: string, data: string): RosterError {
  return new RosterError('INTERNAL', `malformed ${event} event from roster server: ${JSON.stringify(data.slice(0, 200))}`);
}

function parseFrame(event: string, data: string): unknown {
  try {
    return JSON.parse(data);
  } catch (e) {
    throw new Terminal(new RosterError('INTERNAL', `malformed ${event} event from roster server: not JSON`, { cause: e }));
  }
}
