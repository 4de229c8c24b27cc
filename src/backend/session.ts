import type { Session } from './types.js';
import { ClosedError, isRosterError, SessionLostError } from '../core/errors.js';
import { jitter } from '../core/async.js';

export interface KeepaliveDriver {
  /** Renew the lease once. Throw SessionLostError if the backend says it is gone; any other error
   *  counts as "unreachable" and is retried until the TTL has passed since the last success. */
  keepAlive(): Promise<void>;
  /** Revoke the lease (deleting its keys). */
  revoke(): Promise<void>;
  /** Called once when the session ends for any reason (for the backend's own bookkeeping). */
  onEnd?(): void;
}

/**
 * A lease kept alive by a jittered, unref()'d timer at about ttl/3. Declares the session lost when
 * the backend says the lease is gone, or when no renewal has succeeded for a whole TTL (the server
 * may already have expired it; presuming it alive would let two holders coexist).
 * Shared by every backend whose engine has no keepalive of its own.
 */
export class KeepaliveSession implements Session {
  private readonly ac = new AbortController();
  private timer: NodeJS.Timeout | undefined;
  private lastOk: number;
  private ended = false;
  private inflight: Promise<void> | undefined;
  private _lost = false;
  /** Most recent keepalive failure while still within the TTL (surfaced for metrics / events). */
  lastError: unknown;

  constructor(
    readonly id: string,
    readonly ttl: number,
    private readonly driver: KeepaliveDriver,
    private readonly intervalRatio = 1 / 3,
  ) {
    this.lastOk = Date.now();
    this.schedule(this.ttl * this.intervalRatio);
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }
  get lost(): boolean {
    return this._lost;
  }

  private schedule(ms: number): void {
    if (this.ended) return;
    this.timer = setTimeout(() => void this.tick(), jitter(ms, 0.1));
    this.timer.unref();
  }

  private async tick(): Promise<void> {
    if (this.ended) return;
    this.inflight = this.driver.keepAlive();
    try {
      await this.inflight;
      this.lastOk = Date.now();
      this.lastError = undefined;
      this.schedule(this.ttl * this.intervalRatio);
    } catch (e) {
      if (this.ended) return;
      if (isRosterError(e, 'SESSION_LOST')) return this.markLost(e);
      this.lastError = e;
      const left = this.lastOk + this.ttl - Date.now();
      if (left <= 0) return this.markLost(new SessionLostError(`session ${this.id} lost: no keepalive succeeded for ${this.ttl} ms`, { cause: e }));
      // Unreachable: retry quickly, but never past the deadline.
      this.schedule(Math.min(Math.max(50, this.ttl / 10), left));
    } finally {
      this.inflight = undefined;
    }
  }

  /** The backend observed the loss itself (e.g. a put answered SESSION_LOST, or an expiry event). */
  markLost(err: unknown = new SessionLostError(`session ${this.id} lost`)): void {
    if (this.ended) return;
    this._lost = true;
    this.end(isRosterError(err, 'SESSION_LOST') ? err : new SessionLostError(`session ${this.id} lost`, { cause: err }));
  }

  private end(reason: Error): void {
    if (this.ended) return;
    this.ended = true;
    if (this.timer) clearTimeout(this.timer);
    this.ac.abort(reason);
    this.driver.onEnd?.();
  }

  async close(): Promise<void> {
    if (this.ended) return;
    this.end(new ClosedError(`session ${this.id} closed`));
    await this.inflight?.catch(() => undefined);
    try {
      await this.driver.revoke();
    } catch (e) {
      // Already gone is what we wanted; anything else is the caller's to know.
      if (!isRosterError(e, 'SESSION_LOST')) throw e;
    }
  }

  orphan(): void {
    this.end(new ClosedError(`session ${this.id} orphaned`));
  }
}
