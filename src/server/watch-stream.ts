import type { ServerResponse } from 'node:http';
import type { Engine, Subscription } from '../engine/engine.js';
import { isReserved } from './auth/store.js';

/**
 * The opening of a watch stream, written in pieces: the snapshot (or reset) of a new watch, the
 * backlog of a resumed one. Neither is ever one string: the snapshot is written item by item, the
 * backlog read from the engine's history a page at a time, each piece once the socket has taken
 * the previous ones (at most HIGH_WATER bytes wait in the socket), so a resume from far back costs
 * the server no more memory than a live stream.
 *
 * Events published while the opening is written are in the history too: the stream ignores them
 * as they are published (`live` false) and reads them from history, and it goes live at the exact
 * moment it has read everything published, so no event is sent twice or skipped. If history it
 * still has to send is dropped meanwhile (a client slower than the history bound), the stream is
 * ended: the client resumes from the last id it got, and gets a reset.
 */
export interface OpeningStream {
  readonly res: ServerResponse;
  /** The connection is gone. */
  closed: boolean;
  /** The opening is written: live events are written as they are published. */
  live: boolean;
  /** Leave out the server's reserved keys (a prefix that covers them: '', '_', ...). */
  readonly filtered: boolean;
}

const HIGH_WATER = 1024 * 1024;
const PIECE = 64 * 1024;
const PAGE_EVENTS = 64;

export function sseFrame(type: string, id: number, data: string): string {
  return `id: ${id}\nevent: ${type}\ndata: ${data}\n\n`;
}

/** Write the opening of `s`, then set it live. `end` ends the stream (history gone meanwhile). */
export async function writeOpening(engine: Engine, s: OpeningStream, sub: Subscription, prefix: string, from: number | undefined, end: () => void): Promise<void> {
  const res = s.res;
  res.write('retry: 1000\n\n');
  let cursor: number;
  if (sub.snapshot) {
    const { revision, items } = sub.snapshot;
    // Byte for byte the frame of JSON.stringify(snapshot), without building that string.
    let piece = `id: ${revision}\nevent: ${sub.reset ? 'reset' : 'snapshot'}\ndata: {"revision":${revision},"items":[`;
    let first = true;
    for (let i = 0; i < items.length; i++) {
      if (s.filtered && isReserved(items[i]!.key)) continue;
      piece += (first ? '' : ',') + JSON.stringify(items[i]);
      first = false;
      if (piece.length >= PIECE) {
        res.write(piece);
        piece = '';
        if (!(await drained(s))) return;
      }
    }
    res.write(piece + ']}\n\n' + sseFrame('synced', revision, `{"revision":${revision}}`));
    cursor = revision;
  } else {
    cursor = from!;
  }
  for (;;) {
    if (s.closed) return;
    const page = engine.historyPage(prefix, cursor, PAGE_EVENTS);
    if (page === undefined) return end();
    let whole = true;
    let piece = '';
    for (const ev of page.events) {
      cursor = ev.revision;
      if (s.filtered && isReserved(ev.key)) continue;
      piece += sseFrame(ev.type, ev.revision, JSON.stringify(ev));
      if (piece.length >= PIECE) {
        res.write(piece);
        piece = '';
        // The rest of the page is read again after the wait: nothing is held across it.
        if (res.writableLength > HIGH_WATER) {
          whole = ev === page.events.at(-1);
          break;
        }
      }
    }
    if (piece) res.write(piece);
    if (whole) {
      cursor = page.next;
      if (cursor >= engine.publishedRevision) {
        s.live = true;
        return;
      }
    }
    if (!(await drained(s))) return;
  }
}

/** Wait until the socket has taken all but HIGH_WATER bytes; false if the connection closed. */
function drained(s: OpeningStream): Promise<boolean> {
  const res = s.res;
  if (s.closed) return Promise.resolve(false);
  if (res.writableLength <= HIGH_WATER) return Promise.resolve(true);
  return new Promise((resolve) => {
    const done = (ok: boolean) => {
      res.off('drain', onDrain);
      res.off('close', onClose);
      resolve(ok && !s.closed);
    };
    const onDrain = () => done(true);
    const onClose = () => done(false);
    res.on('drain', onDrain);
    res.on('close', onClose);
  });
}
