import { InvalidArgumentError, QuotaExceededError } from '../../core/errors.js';

/**
 * Per-principal limits: live sessions, open watch streams, keys, value bytes and request rate.
 * A principal is a token (its accessor) or, for requests without one (auth off), the client's
 * address. Every limit is off unless configured. Over a limit: 429 QUOTA_EXCEEDED with a
 * Retry-After header, and the rest of the server goes on serving everyone else.
 *
 * Counting:
 * - sessions: the sessions a principal created that are still alive (checked against the engine
 *   when the principal is at its limit, so ended sessions free their slot without a hook);
 * - watch streams: open streams, released when the stream closes;
 * - keys and value bytes: keys a principal created through this server and that still exist with
 *   the same create revision (a key deleted, expired or re-created by someone else stops counting),
 *   reconciled against the engine when the principal reaches a limit. The ledger is in memory: keys
 *   created before a restart are not charged to anyone (sessions are: their owners are durable).
 * - request rate: a token bucket per principal (`rate` per second, bursts of `burst`).
 */
export interface QuotaLimits {
  /** Live sessions per principal. */
  sessions?: number;
  /** Open watch streams per principal. */
  watches?: number;
  /** Keys created per principal (that still exist). */
  keys?: number;
  /** Bytes of the values of those keys. */
  valueBytes?: number;
  /** Requests per second per principal (token bucket). */
  rate?: number;
  /** Bucket size for `rate` (default: one second's worth, at least 1). */
  burst?: number;
}

export type QuotaName = 'sessions' | 'watches' | 'keys' | 'valueBytes' | 'rate';
export const QUOTA_NAMES: readonly QuotaName[] = ['sessions', 'watches', 'keys', 'valueBytes', 'rate'];

/** Seconds a client is asked to wait when a count (not the rate) is at its limit. */
const COUNT_RETRY_SECONDS = 5;

export function validateQuotas(q: QuotaLimits | undefined): QuotaLimits {
  const out: QuotaLimits = {};
  if (q === undefined) return out;
  for (const k of [...QUOTA_NAMES, 'burst'] as const) {
    const v = q[k];
    if (v === undefined) continue;
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0 || (k !== 'rate' && !Number.isSafeInteger(v))) {
      throw new InvalidArgumentError(`invalid quota ${k} ${String(v)}: expected a positive ${k === 'rate' ? 'number' : 'integer'}`, { details: { field: k } });
    }
    out[k] = v;
  }
  for (const k of Object.keys(q)) if (!([...QUOTA_NAMES, 'burst'] as string[]).includes(k)) throw new InvalidArgumentError(`unknown quota ${JSON.stringify(k)}: expected ${QUOTA_NAMES.join(', ')}, burst`);
  return out;
}

interface Usage {
  sessions: Set<string>;
  watches: number;
  /** key -> [createRevision, bytes] */
  keys: Map<string, [number, number]>;
  bytes: number;
  tokens: number;
  refilledAt: number;
}

/** What the quota book needs to reconcile its counts with the engine. */
export interface QuotaEngine {
  sessionAlive(id: string): boolean;
  /** The create revision and value size of a key now, or undefined if absent. */
  keyState(key: string): Promise<{ createRevision: number; bytes: number } | undefined>;
}

export class QuotaBook {
  readonly limits: QuotaLimits;
  readonly rejected: Record<QuotaName, number> = { sessions: 0, watches: 0, keys: 0, valueBytes: 0, rate: 0 };
  private readonly usage = new Map<string, Usage>();
  /** Keys or value bytes are limited: puts must be checked and charged. */
  readonly trackKeys: boolean;

  constructor(
    limits: QuotaLimits,
    private readonly engine: QuotaEngine,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.limits = validateQuotas(limits);
    this.trackKeys = this.limits.keys !== undefined || this.limits.valueBytes !== undefined;
  }

  get active(): boolean {
    return QUOTA_NAMES.some((k) => this.limits[k] !== undefined);
  }

  private of(principal: string): Usage {
    let u = this.usage.get(principal);
    if (!u) {
      if (this.usage.size >= 10_000) this.prune();
      u = { sessions: new Set(), watches: 0, keys: new Map(), bytes: 0, tokens: this.burst, refilledAt: this.now() };
      this.usage.set(principal, u);
    }
    return u;
  }

  private get burst(): number {
    return this.limits.burst ?? Math.max(1, Math.ceil(this.limits.rate ?? 1));
  }

  private refuse(quota: QuotaName, principal: string, limit: number, retryAfterSeconds: number): never {
    this.rejected[quota]++;
    throw new QuotaExceededError(`quota exceeded: ${quota} limit ${limit} for ${principal.startsWith('addr:') ? 'address ' + principal.slice(5) : 'token ' + principal}`, {
      details: { quota, limit, retryAfterSeconds },
    });
  }

  /** One request: take a token from the principal's bucket or refuse with the wait. */
  request(principal: string): void {
    const rate = this.limits.rate;
    if (rate === undefined) return;
    const u = this.of(principal);
    const t = this.now();
    u.tokens = Math.min(this.burst, u.tokens + ((t - u.refilledAt) / 1000) * rate);
    u.refilledAt = t;
    if (u.tokens >= 1) {
      u.tokens -= 1;
      return;
    }
    this.refuse('rate', principal, rate, Math.max(1, Math.ceil((1 - u.tokens) / rate)));
  }

  /** Before granting a session. */
  checkSession(principal: string): void {
    const limit = this.limits.sessions;
    if (limit === undefined) return;
    const u = this.of(principal);
    if (u.sessions.size >= limit) for (const id of u.sessions) if (!this.engine.sessionAlive(id)) u.sessions.delete(id);
    if (u.sessions.size >= limit) this.refuse('sessions', principal, limit, COUNT_RETRY_SECONDS);
  }

  sessionGranted(principal: string, id: string): void {
    if (this.limits.sessions !== undefined) this.of(principal).sessions.add(id);
  }

  /** Before opening a watch stream: returns its release (call once when the stream closes). */
  openWatch(principal: string): () => void {
    const limit = this.limits.watches;
    if (limit === undefined) return () => undefined;
    const u = this.of(principal);
    if (u.watches >= limit) this.refuse('watches', principal, limit, COUNT_RETRY_SECONDS);
    u.watches++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      u.watches--;
    };
  }

  /** Before puts: each may create a key or change a value's size (keys already charged to the
   *  principal count by their growth only). */
  async checkKeys(principal: string, writes: readonly { key: string; bytes: number }[]): Promise<void> {
    if (!this.trackKeys || writes.length === 0) return;
    const u = this.of(principal);
    const need = () => {
      let adds = 0;
      let growth = 0;
      for (const w of writes) {
        const had = u.keys.get(w.key);
        if (had === undefined) adds++;
        growth += w.bytes - (had?.[1] ?? 0);
      }
      return { adds, growth };
    };
    const over = ({ adds, growth }: { adds: number; growth: number }) =>
      (this.limits.keys !== undefined && adds > 0 && u.keys.size + adds > this.limits.keys) || (this.limits.valueBytes !== undefined && growth > 0 && u.bytes + growth > this.limits.valueBytes);
    let n = need();
    if (!over(n)) return;
    await this.reconcile(u);
    n = need();
    if (this.limits.keys !== undefined && n.adds > 0 && u.keys.size + n.adds > this.limits.keys) this.refuse('keys', principal, this.limits.keys, COUNT_RETRY_SECONDS);
    if (this.limits.valueBytes !== undefined && n.growth > 0 && u.bytes + n.growth > this.limits.valueBytes) this.refuse('valueBytes', principal, this.limits.valueBytes, COUNT_RETRY_SECONDS);
  }

  /** After a successful put: charge a created key, or re-measure one the principal created. */
  wrote(principal: string, key: string, createRevision: number, value: string): void {
    if (!this.trackKeys) return;
    const bytes = Buffer.byteLength(value);
    const u = this.of(principal);
    const had = u.keys.get(key);
    if (had !== undefined && had[0] !== createRevision) {
      u.bytes -= had[1];
      u.keys.delete(key);
    }
    const mine = u.keys.get(key);
    if (mine !== undefined) {
      u.bytes += bytes - mine[1];
      mine[1] = bytes;
    } else if (createRevision > 0) {
      u.keys.set(key, [createRevision, bytes]);
      u.bytes += bytes;
    }
  }

  /** Drop the keys that no longer exist as the principal created them. */
  private async reconcile(u: Usage): Promise<void> {
    for (const [key, [rev]] of [...u.keys]) {
      const now = await this.engine.keyState(key);
      const cur = u.keys.get(key);
      if (!cur) continue;
      if (now === undefined || now.createRevision !== rev) {
        u.bytes -= cur[1];
        u.keys.delete(key);
      } else {
        u.bytes += now.bytes - cur[1];
        cur[1] = now.bytes;
      }
    }
  }

  /** Forget principals that hold nothing and whose bucket is full again (many client addresses). */
  private prune(): void {
    const t = this.now();
    const rate = this.limits.rate ?? 0;
    for (const [k, u] of this.usage) {
      const full = rate === 0 || u.tokens + ((t - u.refilledAt) / 1000) * rate >= this.burst;
      if (full && u.watches === 0 && u.keys.size === 0 && [...u.sessions].every((id) => !this.engine.sessionAlive(id))) this.usage.delete(k);
    }
  }

  /** Usage per principal for /metrics (at most `max` principals, the busiest first). */
  snapshot(max = 100): { principal: string; sessions: number; watches: number; keys: number; valueBytes: number }[] {
    const rows = [...this.usage].map(([principal, u]) => {
      for (const id of u.sessions) if (!this.engine.sessionAlive(id)) u.sessions.delete(id);
      return { principal, sessions: u.sessions.size, watches: u.watches, keys: u.keys.size, valueBytes: u.bytes };
    });
    return rows
      .filter((r) => r.sessions + r.watches + r.keys > 0)
      .sort((a, b) => b.sessions + b.watches + b.keys - (a.sessions + a.watches + a.keys))
      .slice(0, max);
  }
}
