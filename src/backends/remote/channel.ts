import type { LeaseSession } from '../../contract/session.js';
import { backoff, jitter, sleep } from '../../core/async.js';
import { systemClock, type Clock, type Timer } from '../../core/clock.js';
import { isRosterError, RosterError, SessionLostError, UnavailableError } from '../../core/errors.js';
import { SseParser } from './sse.js';
import { errorOfReply, replyError, type Transport } from './transport.js';

/** What a session channel needs of the transport (a test drives it with a fake one). */
export type ChannelTransport = Pick<Transport, 'call' | 'stream' | 'error' | 'requestTimeout'>;

/** The reason a stream is closed when the backend has no sessions left (not a failure). */
const IDLE = new UnavailableError('session channel closed: no sessions left');

interface Member {
  readonly session: LeaseSession;
  readonly bound: boolean;
  /** The channel the server renews it through (granted on, or attached to); undefined: none yet. */
  attachedTo: string | undefined;
  /** Start of the last request that renewed it (conservative: the server renewed it later). */
  lastOk: number;
}

/**
 * The client side of a session channel (server/channels.ts): one per RemoteBackend, i.e. per
 * process. Every session of the backend is renewed by one request per interval
 * (`POST /api/v1/channels/<id>/keepalive`, about min(ttl)/3), whatever their number; the
 * channel's stream (`GET /api/v1/channels`) is the connection connection-bound sessions are bound
 * to. The stream is open while the backend has sessions (and while one is being granted).
 *
 * Loss: the server's keepalive reply lists sessions that are gone (SessionLostError at once); a
 * session no renewal succeeded for over a whole TTL is presumed lost, as LeaseSession does for
 * sessions renewed one by one. After the stream drops it is reopened at once (resuming the
 * channel, within the server's grace nothing is lost), then with backoff; a channel the server no
 * longer knows is replaced by a new one and every session attached to it again — the bound ones
 * the server expired meanwhile come back lost.
 */
export class SessionChannel {
  private id: string | undefined;
  private live = false;
  private readonly members = new Map<string, Member>();
  private conn: AbortController | undefined;
  private running = false;
  private closed = false;
  /** Abort reasons of connections ended by stale(): a reconnect is due at once, and the grants
   *  waiting for it must not fail for the old connection's end. */
  private readonly gone = new WeakSet<object>();
  /** grant()s waiting for the stream's opening. */
  private waiters: { resolve: (id: string | undefined) => void; reject: (e: unknown) => void }[] = [];
  private unsupported = false;
  /** grant()s between ready() and done(): the stream stays open for them. */
  private pending = 0;
  private timer: Timer | undefined;
  private ticking = false;
  private attaching = false;
  /** Ends the reconnect loop's backoff early: a renewal is due and sessions are at stake. */
  private wake: (() => void) | undefined;
  private attachAgain = false;
  /** The last renewal's failure, while it is failing. */
  lastError: unknown;
  /** Diagnostics (tests, bench): channel openings and keepalive requests sent. */
  readonly stats = { opens: 0, resumed: 0, keepalives: 0 };

  constructor(
    private readonly t: ChannelTransport,
    private readonly graceMs: number | undefined,
    private readonly retry: { baseMs: number; capMs: number },
    private readonly clock: Clock = systemClock,
  ) {}

  /**
   * Grant a session on the channel: `post(on)` asks the server for a session on channel `on` and
   * hands it to add() before it returns (the stream stays open for it meanwhile). When the server
   * answers that `on` is gone (the channel expired between its opening and the grant; the server
   * revokes a session it granted on a channel that expired meanwhile), it is asked once more on a
   * fresh channel. Undefined when the server has no session channels (an older server): sessions
   * are then renewed one by one.
   */
  async grant<T>(post: (on: string) => Promise<T>): Promise<T | undefined> {
    for (let attempt = 0; ; attempt++) {
      const on = await this.ready();
      if (on === undefined) {
        this.done();
        return undefined;
      }
      try {
        return await post(on);
      } catch (e) {
        if (attempt > 0 || !isRosterError(e, 'NOT_FOUND') || e.details?.channel !== on) throw e;
        this.stale(on);
      } finally {
        this.done();
      }
    }
  }

  /** The channel to grant a session on: opens the stream if needed (undefined: no channels). */
  private ready(): Promise<string | undefined> {
    this.pending++;
    if (this.unsupported) return Promise.resolve(undefined);
    if (this.live && this.id !== undefined) return Promise.resolve(this.id);
    return new Promise((resolve, reject) => {
      // A grant whose channel could not open is over: it will not call done().
      const failed = (e: unknown) => {
        this.pending--;
        reject(e);
      };
      this.waiters.push({ resolve, reject: failed });
      this.run();
    });
  }

  /** The grant that called ready() is over (granted and added, or failed). */
  private done(): void {
    if (--this.pending === 0 && this.members.size === 0) this.idle();
  }

  /** The server forgot channel `id`: reconnect (a fresh channel) before retrying. */
  private stale(id: string): void {
    if (this.id !== id) return;
    const gone = new UnavailableError(`session channel ${id} is gone`);
    this.gone.add(gone);
    this.live = false; // as idle(): a grant arriving now waits for the new channel, not this id
    this.conn?.abort(gone);
  }

  /** Renew `session` through the channel from now on (granted on channel `on`). */
  add(session: LeaseSession, bound: boolean, on: string): void {
    this.members.set(session.id, { session, bound, attachedTo: on, lastOk: this.clock.now() });
    if (on !== this.id) this.attach();
    this.run();
    this.schedule();
  }

  /** The session ended (closed, lost or orphaned): stop renewing it; the stream closes with the last. */
  remove(id: string): void {
    if (!this.members.delete(id)) return;
    if (this.members.size === 0 && this.pending === 0) this.idle();
  }

  /** An orphaned bound session must live to its TTL: ask the server to unbind it (best effort). */
  detach(id: string): Promise<void> {
    const ch = this.id;
    if (ch === undefined) return Promise.resolve();
    return this.t.call('POST', `/api/v1/channels/${ch}/detach`, `{"sessions":[${JSON.stringify(id)}]}`).then(
      () => undefined,
      () => undefined,
    );
  }

  close(): void {
    this.closed = true;
    this.idle();
    for (const w of this.waiters.splice(0)) w.reject(new UnavailableError('backend closed'));
  }

  private idle(): void {
    this.timer?.clear();
    this.timer = undefined;
    if (!this.wanted() && this.conn && !this.conn.signal.aborted) {
      // Not a failure: a grant arriving now waits for a new connection, not for this one's end.
      this.live = false;
      this.conn.abort(IDLE);
    }
  }

  private wanted(): boolean {
    return !this.closed && !this.unsupported && (this.members.size > 0 || this.waiters.length > 0 || this.pending > 0);
  }

  // ------------------------------------------------------------------ the stream

  private run(): void {
    if (this.running) return;
    this.running = true;
    void (async () => {
      let attempt = 0;
      try {
        while (this.wanted()) {
          try {
            await this.connect(() => (attempt = 0));
          } catch (e) {
            if (e === IDLE || (typeof e === 'object' && e !== null && this.gone.has(e))) {
              // Closed for want of sessions, or ended by stale() because the server forgot it: a grant
              // that came meanwhile (or that found the old id refused) gets a new channel at once.
              attempt = 0;
              continue;
            }
            if (isRosterError(e, 'NOT_FOUND') && e.details?.channel === undefined) {
              // No channel endpoint on this server: sessions fall back to their own keepalives.
              this.unsupported = true;
              for (const w of this.waiters.splice(0)) w.resolve(undefined);
              break;
            }
            for (const w of this.waiters.splice(0)) w.reject(e);
          }
          if (!this.wanted()) break;
          // The first reconnect is immediate (the server's grace is short); then back off.
          if (attempt > 0) {
            const woken = new AbortController();
            this.wake = () => woken.abort();
            await sleep(backoff(attempt - 1, this.retry.baseMs, this.retry.capMs), woken.signal, this.clock).catch(() => undefined);
            this.wake = undefined;
          }
          attempt++;
        }
      } finally {
        this.running = false;
      }
    })();
  }

  /** One connection of the stream, until it ends or fails. */
  private async connect(up: () => void): Promise<void> {
    const c = new AbortController();
    this.conn = c;
    const q: string[] = [];
    if (this.id !== undefined) q.push(`resume=${this.id}`);
    if (this.graceMs !== undefined) q.push(`graceMs=${this.graceMs}`);
    let idle: Timer | undefined;
    let lastData = this.clock.now();
    // Its first event names the channel; heartbeats (comments) follow.
    let named = false;
    const parser = new SseParser((_event, data) => {
      if (named) return;
      named = true;
      const o = JSON.parse(data) as { id?: unknown; resumed?: unknown } | null;
      if (!o || typeof o.id !== 'string') throw replyError(200, data);
      this.opened(o.id, o.resumed === true);
      up();
    });
    try {
      const reply = await this.t.stream(`/api/v1/channels${q.length ? `?${q.join('&')}` : ''}`, c.signal, {
        open: (headers) => {
          const hb = Number(headers['roster-heartbeat-ms']);
          const idleLimit = (Number.isFinite(hb) && hb > 0 ? hb : 15_000) * 2.5;
          const check = (): void => {
            // Never given up before the longest bound session's TTL: closing the connection is what
            // expires bound sessions, and a path that stops forwarding data but passes the close
            // would otherwise end them before their TTL (a partition keeps the TTL).
            const limit = Math.max(idleLimit, this.longestBoundTtl());
            if (this.clock.now() - lastData > limit) c.abort(new UnavailableError(`session channel silent for ${Math.round(limit)} ms`));
            else if (!c.signal.aborted) idle = this.clock.setTimeout(check, Math.max(50, idleLimit / 4));
          };
          idle = this.clock.setTimeout(check, Math.max(50, idleLimit / 4));
        },
        data: (chunk) => {
          lastData = this.clock.now();
          if (!named) parser.push(chunk); // after the opening only heartbeats come
        },
      });
      if (reply.status !== 200) throw errorOfReply(reply.status, reply.text);
    } catch (e) {
      throw c.signal.aborted && c.signal.reason instanceof RosterError ? c.signal.reason : this.t.error(e);
    } finally {
      this.live = false;
      idle?.clear();
    }
  }

  private opened(id: string, resumed: boolean): void {
    this.stats.opens++;
    if (resumed) this.stats.resumed++;
    this.id = id;
    this.live = true;
    for (const w of this.waiters.splice(0)) w.resolve(id);
    if (!resumed && this.members.size > 0) this.attach();
    if (!this.wanted()) this.conn?.abort();
  }

  /** Attach every session not yet renewed through the current channel (one request). */
  private attach(): void {
    if (this.attaching) {
      this.attachAgain = true;
      return;
    }
    const ch = this.id;
    if (!this.live || ch === undefined) return; // done when the stream opens
    const todo = [...this.members.values()].filter((m) => m.attachedTo !== ch);
    if (todo.length === 0) return;
    this.attaching = true;
    const body = JSON.stringify({ sessions: todo.map((m) => ({ id: m.session.id, bound: m.bound })) });
    const t0 = this.clock.now();
    this.t
      .call('POST', `/api/v1/channels/${ch}/attach`, body)
      .then(
        (r) => {
          const lost = new Set(lostOf(r));
          for (const m of todo) {
            if (lost.has(m.session.id)) m.session.markLost(new SessionLostError(`session ${m.session.id} lost: it expired while the session channel was reconnecting`));
            else {
              m.attachedTo = ch;
              m.lastOk = t0;
            }
          }
        },
        (e: unknown) => {
          // The channel is gone again or the server unreachable: the next connection retries.
          if (isRosterError(e, 'NOT_FOUND')) this.stale(ch);
        },
      )
      .finally(() => {
        this.attaching = false;
        if (this.attachAgain) {
          this.attachAgain = false;
          this.attach();
        }
      });
  }

  // ------------------------------------------------------------------ renewals

  private minTtl(): number {
    let ttl = Infinity;
    for (const m of this.members.values()) ttl = Math.min(ttl, m.session.ttl);
    return ttl;
  }

  private schedule(ms?: number): void {
    if (this.closed || this.members.size === 0 || this.ticking) return;
    const next = ms ?? jitter(this.minTtl() / 3, 0.1);
    if (this.timer) {
      // Keep the earlier of the two.
      if (ms === undefined) return;
      this.timer.clear();
    }
    this.timer = this.clock.setTimeout(() => {
      this.timer = undefined;
      void this.tick();
    }, next);
  }

  private async tick(): Promise<void> {
    if (this.closed || this.members.size === 0) return;
    this.ticking = true;
    const ch = this.id;
    const minTtl = this.minTtl();
    const t0 = this.clock.now();
    let ok = false;
    try {
      if (!this.live) this.wake?.(); // reconnect now rather than after the stream's backoff
      if (ch === undefined) throw new UnavailableError('session channel not connected');
      this.stats.keepalives++;
      const r = await this.t.call('POST', `/api/v1/channels/${ch}/keepalive`, undefined, undefined, Math.max(250, Math.min(minTtl / 3, this.t.requestTimeout)), true);
      const lost = new Set(lostOf(r));
      for (const m of [...this.members.values()]) {
        if (m.attachedTo !== ch) continue;
        if (lost.has(m.session.id)) m.session.markLost(new SessionLostError(`session ${m.session.id} lost: it expired or was revoked`));
        else m.lastOk = t0;
      }
      ok = true;
      this.lastError = undefined;
    } catch (e) {
      if (isRosterError(e, 'NOT_FOUND') && ch !== undefined) this.stale(ch);
      this.lastError = e;
    } finally {
      this.ticking = false;
    }
    this.presumeLost(this.lastError);
    const unattached = [...this.members.values()].some((m) => m.attachedTo !== this.id);
    if (ok && !unattached) return this.schedule();
    // Sessions whose attach failed (a timeout, a 503) are attached again, not left to be lost.
    if (ok && this.live) this.attach();
    // Unreachable (or some sessions not yet renewed here): retry soon, never past a deadline.
    const now = this.clock.now();
    let left = Infinity;
    for (const m of this.members.values()) left = Math.min(left, m.lastOk + m.session.ttl - now);
    this.schedule(Math.max(10, Math.min(Math.max(50, minTtl / 10), left)));
  }

  private longestBoundTtl(): number {
    let ms = 0;
    for (const m of this.members.values()) if (m.bound && m.session.ttl > ms) ms = m.session.ttl;
    return ms;
  }

  /** Sessions no renewal succeeded for over a whole TTL: the server may have expired them. */
  private presumeLost(cause: unknown): void {
    const now = this.clock.now();
    for (const m of [...this.members.values()]) {
      if (now - m.lastOk >= m.session.ttl) m.session.markLost(new SessionLostError(`session ${m.session.id} lost: no keepalive succeeded for ${m.session.ttl} ms`, { cause }));
    }
  }
}

function lostOf(r: unknown): string[] {
  const lost = (r as { lost?: unknown } | undefined)?.lost;
  return Array.isArray(lost) ? lost.filter((x): x is string => typeof x === 'string') : [];
}
