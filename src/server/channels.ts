import type { ServerResponse } from 'node:http';
import { randomBytes } from 'node:crypto';
import type { Engine } from '../engine/engine.js';
import type { SseHub } from './sse.js';
import { isRosterError, NotFoundError } from '../core/errors.js';

/** Grace after a channel's connection drops before its bound sessions expire (default; a client
 *  may ask for another within [0, MAX_GRACE_MS]). */
export const DEFAULT_GRACE_MS = 100;
export const MAX_GRACE_MS = 60_000;

/**
 * A session channel: one per client process (per RemoteBackend), the one connection its sessions
 * are renewed over and, for connection-bound ones, bound to.
 *
 * - `sessions`: every session renewed through it (`POST /api/v1/channels/<id>/keepalive` renews
 *   them all: keepalive cost grows with processes, not sessions); `true` = bound to the channel's
 *   stream.
 * - `res`: the open stream (`GET /api/v1/channels`), while the client holds it. When it closes
 *   without the client having ended its bound sessions first (a clean close revokes them before it
 *   drops the stream, so none is left), the bound sessions are expired after `graceMs` unless a
 *   stream resuming this channel arrives first. A connection that stays open but goes silent
 *   (stopped process, partition, a proxy that stops forwarding) never ends here: its sessions
 *   expire at their TTL, because nobody renews them.
 */
class Channel {
  readonly sessions = new Map<string, boolean>();
  res: ServerResponse | undefined;
  grace: NodeJS.Timeout | undefined;
  constructor(
    readonly id: string,
    /** The principal (token accessor) that opened it: only it may use the channel. */
    readonly owner: string,
    public graceMs: number,
    /** Frees the principal's stream quota slot (once). */
    public release: () => void,
  ) {}
}

export interface ChannelOpening {
  id: string;
  resumed: boolean;
  graceMs: number;
}

/** Every session channel of a server (routes/sessions.ts serves them). */
export class Channels {
  private readonly byId = new Map<string, Channel>();
  /** The channel each session is renewed through (a session is in at most one). */
  private readonly bySession = new Map<string, Channel>();
  private closing = false;

  constructor(
    private readonly engine: Engine,
    /** Serves the streams' head and heartbeats, as it does a watch stream's. */
    private readonly sse: Pick<SseHub, 'adopt'>,
    private readonly onError: (err: unknown) => void,
  ) {}

  get size(): number {
    return this.byId.size;
  }

  /** Serve a channel's stream on `res`: `resume` names the channel the client had (it takes it
   *  over if it still exists and is the principal's; otherwise a new one is made). */
  open(res: ServerResponse, owner: string, resume: string | undefined, graceMs: number, release: () => void): ChannelOpening {
    let ch = resume === undefined ? undefined : this.byId.get(resume);
    const resumed = ch !== undefined && ch.owner === owner;
    if (!resumed || ch === undefined) {
      ch = new Channel(randomBytes(12).toString('base64url'), owner, graceMs, release);
      this.byId.set(ch.id, ch);
    } else {
      if (ch.grace) clearTimeout(ch.grace);
      ch.grace = undefined;
      ch.graceMs = graceMs;
      // A reconnect that raced the old stream's close: the old stream is done.
      const old = ch.res;
      ch.res = undefined;
      ch.release();
      ch.release = release;
      old?.destroy();
    }
    const c = ch;
    c.res = res;
    res.on('close', () => this.dropped(c, res));
    this.sse.adopt(res);
    const opening = { id: c.id, resumed, graceMs };
    res.write(`event: channel\ndata: ${JSON.stringify(opening)}\n\n`);
    return opening;
  }

  /** The principal's channel `id`, or NOT_FOUND (also for another principal's: ids are not told). */
  get(id: string, owner: string): Channel {
    const ch = this.byId.get(id);
    if (!ch || ch.owner !== owner) throw new NotFoundError(`session channel ${id} not found: its connection ended; open a new one`, { details: { channel: id } });
    return ch;
  }

  /** Renew `session` through `ch` from now on; `bound`: expire it when the channel's connection drops. */
  attach(ch: Channel, session: string, bound: boolean): void {
    const prev = this.bySession.get(session);
    if (prev && prev !== ch) prev.sessions.delete(session);
    ch.sessions.set(session, bound);
    this.bySession.set(session, ch);
  }

  /** The session is no longer renewed (nor bound) through any channel. */
  detach(session: string): void {
    const ch = this.bySession.get(session);
    if (!ch) return;
    ch.sessions.delete(session);
    this.bySession.delete(session);
  }

  /** Renew every session of the channel; returns the ones that are gone (expired or revoked). */
  keepAlive(ch: Channel): string[] {
    const lost: string[] = [];
    for (const id of ch.sessions.keys()) {
      try {
        this.engine.keepAlive(id);
      } catch (e) {
        if (!isRosterError(e, 'SESSION_LOST')) throw e;
        lost.push(id);
        ch.sessions.delete(id);
        this.bySession.delete(id);
      }
    }
    return lost;
  }

  private dropped(ch: Channel, res: ServerResponse): void {
    if (ch.res !== res) return; // replaced by a resuming stream
    ch.res = undefined;
    ch.release();
    ch.release = () => undefined;
    // The server going away is no client crash: its sessions keep their TTL.
    if (this.closing) return;
    ch.grace = setTimeout(() => void this.expire(ch), ch.graceMs);
    ch.grace.unref();
  }

  /** The grace passed without a resuming stream: expire the bound sessions, forget the channel
   *  (its unbound sessions are attached again by the client's next channel). */
  private async expire(ch: Channel): Promise<void> {
    ch.grace = undefined;
    if (ch.res !== undefined || this.closing) return;
    this.byId.delete(ch.id);
    const bound: string[] = [];
    for (const [id, b] of ch.sessions) {
      if (this.bySession.get(id) === ch) this.bySession.delete(id);
      if (b) bound.push(id);
    }
    ch.sessions.clear();
    for (const id of bound) {
      try {
        // Cause 'disconnect': told as such (tracker) and counted once durable (Engine.disconnectedLeases).
        await this.engine.expireLease(id, { cause: 'disconnect', graceMs: ch.graceMs });
      } catch (e) {
        // The engine is closing or its storage failed: the lease still expires at its TTL.
        if (!isRosterError(e, 'CLOSED') && !isRosterError(e, 'UNAVAILABLE')) this.onError(e);
      }
    }
  }

  /** The server closes: end every stream without expiring anything (leases keep their TTL). */
  close(): void {
    this.closing = true;
    for (const ch of this.byId.values()) {
      if (ch.grace) clearTimeout(ch.grace);
      ch.res?.end();
    }
    this.byId.clear();
    this.bySession.clear();
  }
}
