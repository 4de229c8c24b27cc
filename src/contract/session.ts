import type { Session } from './types.js';
import { ClosedError, isRosterError, SessionLostError } from '../core/errors.js';
import { jitter } from '../core/async.js';
import { systemClock, type Clock, type Timer } from '../core/clock.js';
import { maybeHold } from '../core/lifetime.js';

/**
 * What a backend supplies for one of its sessions; LeaseSession does the rest.
 */
export interface SessionDriver {
  /** Renew the lease once. Throw SessionLostError if the backend says it is gone; any other error
   *  counts as "unreachable" and is retried until a whole TTL has passed since the last success.
   *  Omit it when the backend keeps the lease alive by itself (ZooKeeper pings its session) and
   *  reports a loss through `markLost()` instead. */
  keepAlive?(): Promise<void>;
  /** close(): revoke the lease, deleting its keys. SessionLostError here means "already gone"
   *  (which is what close() wanted) and is not reported. */
  revoke(): Promise<void>;
  /** orphan() or loss: drop the lease's resources without revoking (e.g. a dedicated connection). */
  abandon?(): void;
}

export interface LeaseSessionOptions {
  /** Renewal interval as a fraction of the TTL (default 1/3). */
  intervalRatio?: number;
  /** Presume the lease lost once no renewal succeeded for this long (ms; default: the TTL). For an
   *  engine that may expire a lease before the TTL the session reports (Consul expires a session
   *  between its TTL and twice that; roster reports the upper bound as `ttl`), this is the earliest
   *  expiry: past it a holder must not presume it still holds anything. */
  lossAfter?: number;
  clock?: Clock;
  /** Hold the process open while the session is live (default true; see core/lifetime.ts). */
  keepProcessAlive?: boolean;
  /** The engine binds the session to the client's connection (SessionOptions.connectionBound). */
  connectionBound?: boolean;
  /** Called once when the session ends for any reason (the backend's bookkeeping). */
  onEnd?: (s: LeaseSession) => void;
}

/**
 * The session state machine every backend shares (remote keepalive, etcd lease, ZooKeeper session):
 *
 *   live ──keepalive ok──▶ live
 *     │ backend says gone, or no renewal succeeded for a whole TTL ──▶ lost   (signal: SessionLostError)
 *     │ close() ──▶ closed (signal: ClosedError), then the lease is revoked
 *     └ orphan() ──▶ orphaned (signal: ClosedError), nothing revoked: the TTL runs out
 *
 * Every transition out of `live` happens once; later ones are no-ops. With a `keepAlive` driver the
 * lease is renewed on a jittered timer at about ttl/3; failures are retried quickly but never past
 * the deadline, because a lease unrenewed for a TTL may already have been expired by the server
 * (presuming it alive would let two holders coexist).
 */
export class LeaseSession implements Session {
  private readonly ac = new AbortController();
  private readonly clock: Clock;
  private readonly ratio: number;
  private readonly lossAfter: number;
  private readonly release: () => void;
  private timer: Timer | undefined;
  /** When the last successful renewal was *sent*: the server renewed the lease at some moment
   *  after that, so the lease lives at least until lastOk + ttl. Counting from the answer instead
   *  would let a slow answer (a leader election, a congested link) stretch our belief past the
   *  server's expiry. */
  private lastOk: number;
  private ended = false;
  private inflight: Promise<void> | undefined;
  private closing: Promise<void> | undefined;
  private _lost = false;
  /** Most recent keepalive failure while still within the TTL (surfaced for metrics / events). */
  lastError: unknown;
  readonly connectionBound: boolean;

  constructor(
    readonly id: string,
    readonly ttl: number,
    private readonly driver: SessionDriver,
    private readonly opts: LeaseSessionOptions = {},
  ) {
    this.clock = opts.clock ?? systemClock;
    this.ratio = opts.intervalRatio ?? 1 / 3;
    this.lossAfter = opts.lossAfter ?? ttl;
    this.lastOk = this.clock.now();
    this.connectionBound = opts.connectionBound === true;
    this.release = maybeHold(opts.keepProcessAlive);
    if (driver.keepAlive) this.schedule(this.ttl * this.ratio);
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }
  get lost(): boolean {
    return this._lost;
  }

  private schedule(ms: number): void {
    if (this.ended) return;
    this.timer = this.clock.setTimeout(() => void this.tick(), jitter(ms, 0.1));
  }

  private async tick(): Promise<void> {
    if (this.ended) return;
    const sentAt = this.clock.now();
    this.inflight = this.driver.keepAlive!();
    try {
      await this.inflight;
      this.lastOk = sentAt;
      this.lastError = undefined;
      this.schedule(this.ttl * this.ratio);
    } catch (e) {
      if (this.ended) return;
      if (isRosterError(e, 'SESSION_LOST')) return this.markLost(e);
      this.lastError = e;
      const left = this.lastOk + this.lossAfter - this.clock.now();
      if (left <= 0) return this.markLost(new SessionLostError(`session ${this.id} lost: no keepalive succeeded for ${this.lossAfter} ms`, { cause: e }));
      // Unreachable: retry quickly, but never past the deadline.
      this.schedule(Math.min(Math.max(50, this.lossAfter / 10), left));
    } finally {
      this.inflight = undefined;
    }
  }

  /** The backend observed the loss itself (a write answered SESSION_LOST, an expiry event, ...). */
  markLost(err: unknown = new SessionLostError(`session ${this.id} lost`)): void {
    if (this.ended) return;
    this._lost = true;
    this.end(isRosterError(err, 'SESSION_LOST') ? err : new SessionLostError(`session ${this.id} lost`, { cause: err }));
    this.driver.abandon?.();
  }

  private end(reason: Error): void {
    this.ended = true;
    this.timer?.clear();
    this.ac.abort(reason);
    this.release();
    this.opts.onEnd?.(this);
  }

  close(): Promise<void> {
    if (this.closing) return this.closing;
    if (this.ended) return Promise.resolve();
    this.end(new ClosedError(`session ${this.id} closed`));
    this.closing = (async () => {
      await this.inflight?.catch(() => undefined);
      try {
        await this.driver.revoke();
      } catch (e) {
        // Already gone is what we wanted; anything else is the caller's to know.
        if (!isRosterError(e, 'SESSION_LOST')) throw e;
      }
    })();
    return this.closing;
  }

  orphan(): void {
    if (this.ended) return;
    this.end(new ClosedError(`session ${this.id} orphaned`));
    this.driver.abandon?.();
  }
}
