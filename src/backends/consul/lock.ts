/**
 * A lock in Consul's own format, so roster processes and programs using Consul's lock recipe (Go's
 * api.Lock, `consul lock`, anything written after Consul's leader-election guide) contend for the
 * same lock: one key, acquired with `?acquire=<session>` (the txn verb `lock`), its Flags set to
 * api.LockFlagValue (0x2ddccbc058a50c18), waiting with blocking reads of that key while another
 * session holds it, released with `release` (the key stays, free).
 *
 * This is not the recipes' Lock (roster-sd/recipes), which queues one key per waiter and hands the
 * lock over in order (fair, no herd, the fencing token a key's createRevision) on every backend.
 * Consul's recipe has no queue: every waiter wakes on a release and one acquire wins. So this lock
 * is unfair, but it is the one Go and the `consul` command take.
 *
 * - Token (fencing): the index of the write that acquired the lock. Consul's indexes grow with every
 *   write, so a later acquisition always has a greater token; the key's LockIndex (how often it was
 *   acquired, Consul's own sequencer with the key and the session) is reported too, but it starts
 *   over when the key is deleted, so it is not the token.
 * - A key that exists with other Flags is someone else's data: ConflictError (api.ErrLockConflict).
 * - Lock-delay: after a session holding the key is invalidated, Consul refuses to lock the key for
 *   that session's LockDelay (Go's sessions: 15 s); acquisition retries every second meanwhile.
 *   roster's own sessions have LockDelay 0.
 * - Lost: `signal` aborts when the key is gone or held by another session, when the session ends,
 *   or when the key can no longer be read (api.Lock's monitor does the same: an error means "not
 *   safe to assume the lock is held").
 */
import type { Backend, Session } from '../../contract/types.js';
import { anySignal, jitter, sleep, throwIfAborted } from '../../core/async.js';
import { ClosedError, ConflictError, InvalidArgumentError, LockLostError, SessionLostError, UnavailableError } from '../../core/errors.js';
import { ConsulBackend } from './backend.js';
import { encodeValue, type ConsulPair, type KvOp } from './kv.js';

/** api.LockFlagValue, 0x2ddccbc058a50c18, as the exact decimal Consul stores. */
export const LOCK_FLAG_VALUE = BigInt('0x2ddccbc058a50c18').toString();

export interface ConsulLockOptions {
  signal?: AbortSignal;
  /** The key's value while held (api.LockOptions.Value; default empty). */
  value?: string;
  /** How long one blocking read waits while the lock is held (default: the backend's watchWait). */
  waitMs?: number;
}

export interface ConsulLock {
  /** The contract key (Consul's key is the backend's prefix + this). */
  readonly key: string;
  /** Fencing token: the index of the write that acquired the lock. */
  readonly token: number;
  /** Consul's LockIndex of this acquisition. */
  readonly lockIndex: number;
  /** Aborts when the lock is lost (LockLostError, or the session's reason) or released (ClosedError). */
  readonly signal: AbortSignal;
  readonly lost: boolean;
  /** Release the key (it stays, free, as api.Lock.Unlock leaves it). Idempotent. */
  unlock(): Promise<void>;
}

function consulOf(backend: Backend): ConsulBackend {
  if (!(backend instanceof ConsulBackend)) throw new InvalidArgumentError(`consulLock needs a consul:// backend, not ${backend.kind} (${backend.url})`);
  return backend;
}

/**
 * Acquire `key` in Consul's lock format with `session` (a session of `backend`), waiting as long
 * as it takes (bound it with `signal`).
 */
export async function consulLock(backend: Backend, session: Session, key: string, opts: ConsulLockOptions = {}): Promise<ConsulLock> {
  const b = consulOf(backend);
  b.raw.key(key); // validates
  const signal = anySignal(opts.signal, session.signal)!;
  const waitMs = opts.waitMs ?? 15_000;
  const value = opts.value === undefined || opts.value === '' ? undefined : encodeValue(opts.value);
  const acquire: KvOp = { Verb: 'lock', Key: key, Session: session.id, Flags: LOCK_FLAG_VALUE, ...(value ? { Value: value } : {}) };
  let index = 0;
  for (;;) {
    throwIfAborted(signal);
    const r = await b.raw.read(key, index, waitMs, signal);
    const pair = r.pair;
    if (pair && pair.Flags !== LOCK_FLAG_VALUE) {
      throw new ConflictError(`key ${JSON.stringify(key)} exists with flags ${pair.Flags}, not Consul's lock flag ${LOCK_FLAG_VALUE}: it is not a lock`, { details: { key } });
    }
    if (pair?.Session === session.id) return new HeldConsulLock(b, session, key, pair, acquire, waitMs);
    if (pair?.Session) {
      index = r.index;
      continue;
    }
    const out = await b.raw.txn([acquire], `lock ${key}`, signal);
    if (out.ok) return new HeldConsulLock(b, session, key, out.results[0]!, acquire, waitMs);
    const why = out.errors.map((e) => e.What).join('; ');
    if (/invalid session/i.test(why)) throw new SessionLostError(`lock ${key}: Consul no longer knows session ${session.id}`, { details: { key } });
    if (/lock.?delay/i.test(why)) {
      await sleep(jitter(1000, 0.2), signal); // the previous holder's lock-delay (api.Lock: DefaultLockRetryTime)
      index = 0;
      continue;
    }
    index = r.index; // taken meanwhile: wait for the next change
  }
}

class HeldConsulLock implements ConsulLock {
  readonly token: number;
  readonly lockIndex: number;
  private readonly ac = new AbortController();
  private released = false;
  private releasing: Promise<void> | undefined;
  private readonly onSession: () => void;

  constructor(
    private readonly b: ConsulBackend,
    private readonly session: Session,
    readonly key: string,
    held: ConsulPair,
    private readonly acquire: KvOp,
    private readonly waitMs: number,
  ) {
    this.token = held.ModifyIndex;
    this.lockIndex = held.LockIndex;
    this.onSession = () => this.lose(session.signal.reason ?? new SessionLostError(`session ${session.id} ended`));
    session.signal.addEventListener('abort', this.onSession, { once: true });
    if (session.signal.aborted) this.onSession();
    else void this.monitor(held.ModifyIndex);
  }

  get signal(): AbortSignal {
    return this.ac.signal;
  }

  get lost(): boolean {
    return this.ac.signal.aborted && !this.released;
  }

  /** api.Lock's monitorLock: follow the key until it is gone or held by someone else. */
  private async monitor(index: number): Promise<void> {
    let i = index;
    while (!this.ac.signal.aborted) {
      let r: { index: number; pair: ConsulPair | undefined };
      try {
        r = await this.b.raw.read(this.key, i, this.waitMs, this.ac.signal);
      } catch (e) {
        if (this.ac.signal.aborted) return;
        return this.lose(new LockLostError(`lock ${this.key}: cannot tell whether it is still held`, { cause: e }));
      }
      if (r.pair?.Session !== this.session.id) {
        return this.lose(new LockLostError(`lock ${this.key} lost: ${r.pair ? `held by session ${r.pair.Session ?? '(none)'}` : 'the key was deleted'}`));
      }
      i = r.index;
    }
  }

  private lose(reason: unknown): void {
    if (this.ac.signal.aborted) return;
    this.session.signal.removeEventListener('abort', this.onSession);
    this.ac.abort(reason);
  }

  unlock(): Promise<void> {
    return (this.releasing ??= (async () => {
      const wasLost = this.ac.signal.aborted;
      this.released = !wasLost;
      this.session.signal.removeEventListener('abort', this.onSession);
      if (!wasLost) this.ac.abort(new ClosedError(`lock ${this.key} released`));
      if (this.session.signal.aborted) return; // the session's end released (deleted) it
      const out = await this.b.raw.txn([{ ...this.acquire, Verb: 'unlock' }], `unlock ${this.key}`, undefined);
      if (!out.ok && !/isn't held|not held|invalid session/i.test(out.errors.map((e) => e.What).join('; '))) {
        throw new UnavailableError(`unlock ${this.key}: ${out.errors.map((e) => e.What).join('; ')}`);
      }
    })());
  }
}
