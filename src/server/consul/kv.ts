import type { KeyValue } from '../../core/kv.js';
import { ConflictError, InvalidArgumentError } from '../../core/errors.js';
import type { BatchOp, Engine } from '../../engine/engine.js';
import { KV_ROOT } from './hub.js';

/**
 * Consul KV over the engine.
 *
 * Keys: a Consul key may hold any bytes; in the engine it is `consul/kv/` + the key with every byte
 * outside printable ASCII, and '%', percent-encoded (UTF-8). The encoding is a prefix code, so a
 * Consul prefix maps onto an engine prefix and `?recurse` stays one engine list.
 *
 * Values: the engine value is a small JSON envelope `{"v": base64 value, "f": "flags", "li": lock
 * index, "s": session id}`, each field omitted at its default. Flags are uint64: they are kept as a
 * decimal string and written into Consul's JSON as a bare number, so 2^64-1 round-trips exactly.
 * ModifyIndex = the engine's modRevision, CreateIndex = createRevision.
 *
 * Sessions: a key acquired by a session with Behavior=delete is bound to the session's engine lease
 * (the engine deletes it with the lease, atomically); with Behavior=release it is not bound and the
 * session module releases it when the session ends.
 *
 * Every KV write (PUT, DELETE, txn, session release) runs under one mutex, reads its preconditions
 * and applies them as one engine batch with compare-and-set on the versions it read; the mutex is
 * held until the batch is durable. Against other /v1 writers that makes a txn atomic. (A write
 * through roster's native API to `consul/kv/` between the read and the apply makes the batch's CAS
 * fail for that key: reported as a txn error, the other ops of that batch having applied; the
 * engine has no multi-key transaction yet.)
 */

export interface KvEntry {
  readonly key: string;
  readonly value: Buffer | null;
  /** uint64 as a decimal string. */
  readonly flags: string;
  readonly lockIndex: number;
  readonly session?: string;
  readonly kv: KeyValue;
}

export function escapeKey(key: string): string {
  let out = '';
  for (const b of Buffer.from(key, 'utf8')) {
    out += b > 0x20 && b < 0x7f && b !== 0x25 ? String.fromCharCode(b) : '%' + b.toString(16).toUpperCase().padStart(2, '0');
  }
  return out;
}

export function unescapeKey(s: string): string {
  if (!s.includes('%')) return s;
  const bytes: number[] = [];
  for (let i = 0; i < s.length; i++) {
    if (s[i] === '%') {
      bytes.push(parseInt(s.slice(i + 1, i + 3), 16));
      i += 2;
    } else {
      bytes.push(s.charCodeAt(i));
    }
  }
  return Buffer.from(bytes).toString('utf8');
}

export function engineKey(key: string): string {
  return KV_ROOT + escapeKey(key);
}

interface Envelope {
  v?: string;
  f?: string;
  li?: number;
  s?: string;
}

export function decodeEntry(kv: KeyValue): KvEntry | undefined {
  if (!kv.key.startsWith(KV_ROOT)) return undefined;
  let env: Envelope;
  try {
    env = JSON.parse(kv.value) as Envelope;
  } catch {
    return undefined;
  }
  return {
    key: unescapeKey(kv.key.slice(KV_ROOT.length)),
    value: env.v === undefined || env.v === '' ? null : Buffer.from(env.v, 'base64'),
    flags: env.f ?? '0',
    lockIndex: env.li ?? 0,
    ...(env.s ? { session: env.s } : {}),
    kv,
  };
}

export function encodeEnvelope(value: Buffer | null, flags: string, lockIndex: number, session: string | undefined): string {
  const env: Envelope = {};
  if (value && value.length > 0) env.v = value.toString('base64');
  if (flags !== '0') env.f = flags;
  if (lockIndex) env.li = lockIndex;
  if (session) env.s = session;
  return JSON.stringify(env);
}

/** Consul's KVPair JSON, with Flags as an exact uint64. */
export function entryJson(e: { key: string; value: Buffer | null; flags: string; lockIndex: number; session?: string; createIndex: number; modifyIndex: number }, withValue = true): string {
  return (
    `{"LockIndex":${e.lockIndex},"Key":${JSON.stringify(e.key)},"Flags":${e.flags},` +
    `"Value":${withValue && e.value ? JSON.stringify(e.value.toString('base64')) : 'null'},` +
    (e.session ? `"Session":${JSON.stringify(e.session)},` : '') +
    `"CreateIndex":${e.createIndex},"ModifyIndex":${e.modifyIndex}}`
  );
}

export function kvEntryJson(e: KvEntry, withValue = true): string {
  return entryJson({ ...e, createIndex: e.kv.createRevision, modifyIndex: e.kv.modRevision }, withValue);
}

/** One writer at a time, each until its writes are durable. */
export class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.tail.then(fn, fn);
    this.tail = r.catch(() => undefined);
    return r;
  }
}

/** What the KV layer needs to know of sessions. */
export interface SessionLookup {
  /** The session's engine lease and behavior, if it exists. */
  get(id: string): { lease: string; behavior: 'release' | 'delete' } | undefined;
  /** Until when (ms epoch) a key is under lock-delay. */
  lockDelayUntil(key: string): number;
}

/** One KV operation of a transaction (Consul's TxnKVOp), validated. */
export interface KvOp {
  verb: 'set' | 'cas' | 'lock' | 'unlock' | 'get' | 'get-tree' | 'check-index' | 'check-session' | 'check-not-exists' | 'delete' | 'delete-tree' | 'delete-cas';
  key: string;
  value: Buffer | null;
  flags: string;
  index?: bigint;
  session?: string;
}

export interface TxnResult {
  ok: boolean;
  /** Consul's Results (KV entry JSON strings), when ok. */
  results: string[];
  errors: { OpIndex: number; What: string }[];
  index: number;
}

type Overlay = Map<string, KvEntry | null>;

export class KvStore {
  readonly mutex = new Mutex();

  constructor(
    private readonly engine: Engine,
    private readonly sessions: SessionLookup,
    private readonly now: () => number = Date.now,
  ) {}

  async get(key: string): Promise<KvEntry | undefined> {
    const kv = await this.engine.get(engineKey(key));
    return kv && decodeEntry(kv);
  }

  async list(prefix: string): Promise<{ revision: number; entries: KvEntry[] }> {
    const r = await this.engine.list(engineKey(prefix));
    const entries: KvEntry[] = [];
    for (const kv of r.items) {
      const e = decodeEntry(kv);
      if (e && e.key.startsWith(prefix)) entries.push(e);
    }
    entries.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return { revision: r.revision, entries };
  }

  /** PUT /v1/kv/<key> (cas, flags, acquire, release): true when written. */
  put(key: string, value: Buffer | null, opts: { flags: string; cas?: bigint; acquire?: string; release?: string }): Promise<boolean> {
    const verb: KvOp['verb'] = opts.acquire !== undefined ? 'lock' : opts.release !== undefined ? 'unlock' : opts.cas !== undefined ? 'cas' : 'set';
    const op: KvOp = { verb, key, value, flags: opts.flags, ...(opts.cas !== undefined ? { index: opts.cas } : {}), ...((opts.acquire ?? opts.release) !== undefined ? { session: (opts.acquire ?? opts.release)! } : {}) };
    return this.txn([op]).then((r) => {
      if (r.ok) return true;
      const what = r.errors[0]?.What ?? '';
      if (what.startsWith('invalid session')) throw new InvalidArgumentError(what, { details: { session: op.session } });
      return false;
    });
  }

  /** DELETE /v1/kv/<key> (recurse, cas). */
  delete(key: string, opts: { recurse?: boolean; cas?: bigint }): Promise<boolean> {
    const op: KvOp = opts.recurse
      ? { verb: 'delete-tree', key, value: null, flags: '0' }
      : opts.cas !== undefined
        ? { verb: 'delete-cas', key, value: null, flags: '0', index: opts.cas }
        : { verb: 'delete', key, value: null, flags: '0' };
    return this.txn([op]).then((r) => r.ok);
  }

  /** Apply KV ops atomically (against other /v1 writers): all or none. */
  txn(ops: readonly KvOp[]): Promise<TxnResult> {
    return this.mutex.run(() => this.txnLocked(ops));
  }

  private async read(key: string, overlay: Overlay): Promise<KvEntry | undefined> {
    if (overlay.has(key)) return overlay.get(key) ?? undefined;
    return this.get(key);
  }

  private async readTree(prefix: string, overlay: Overlay): Promise<KvEntry[]> {
    const { entries } = await this.list(prefix);
    const m = new Map(entries.map((e) => [e.key, e]));
    for (const [k, e] of overlay) {
      if (!k.startsWith(prefix)) continue;
      if (e) m.set(k, e);
      else m.delete(k);
    }
    return [...m.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
  }

  private async txnLocked(ops: readonly KvOp[]): Promise<TxnResult> {
    const overlay: Overlay = new Map();
    /** Version read for each key written (CAS on apply), 0 = absent. */
    const readVersion = new Map<string, number>();
    const errors: { OpIndex: number; What: string }[] = [];
    type Planned = { i: number; kind: 'read'; entries: KvEntry[] } | { i: number; kind: 'write'; key: string } | { i: number; kind: 'none' };
    const plan: Planned[] = [];
    const now = this.now();
    /** What each written key held before this transaction (for the CAS and the no-op check). */
    const before = new Map<string, KvEntry | undefined>();
    const note = (e: KvEntry | undefined, key: string) => {
      if (!readVersion.has(key)) {
        readVersion.set(key, e ? e.kv.version : 0);
        before.set(key, e);
      }
    };
    const write = (i: number, key: string, e: KvEntry | null) => {
      overlay.set(key, e);
      plan.push({ i, kind: 'write', key });
    };
    const fake = (key: string, value: Buffer | null, flags: string, lockIndex: number, session: string | undefined, cur: KvEntry | undefined): KvEntry => {
      const kv: KeyValue = { key: engineKey(key), value: encodeEnvelope(value, flags, lockIndex, session), createRevision: cur?.kv.createRevision ?? 0, modRevision: 0, version: (cur?.kv.version ?? 0) + 1 };
      return { key, value, flags, lockIndex, ...(session ? { session } : {}), kv };
    };
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      const fail = (what: string) => errors.push({ OpIndex: i, What: what });
      switch (op.verb) {
        case 'get': {
          const cur = await this.read(op.key, overlay);
          if (!cur) fail(`key ${JSON.stringify(op.key)} doesn't exist`);
          else plan.push({ i, kind: 'read', entries: [cur] });
          break;
        }
        case 'get-tree':
          plan.push({ i, kind: 'read', entries: await this.readTree(op.key, overlay) });
          break;
        case 'check-index': {
          const cur = await this.read(op.key, overlay);
          if (!cur) fail(`key ${JSON.stringify(op.key)} doesn't exist`);
          else if (BigInt(cur.kv.modRevision) !== op.index) fail(`current modify index ${cur.kv.modRevision} != ${op.index}`);
          else plan.push({ i, kind: 'read', entries: [cur] });
          break;
        }
        case 'check-session': {
          const cur = await this.read(op.key, overlay);
          if (!cur) fail(`key ${JSON.stringify(op.key)} doesn't exist`);
          else if (cur.session !== op.session) fail(`current session ${cur.session ?? '""'} != ${op.session}`);
          else plan.push({ i, kind: 'read', entries: [cur] });
          break;
        }
        case 'check-not-exists': {
          const cur = await this.read(op.key, overlay);
          if (cur) fail(`key ${JSON.stringify(op.key)} exists`);
          else plan.push({ i, kind: 'none' });
          break;
        }
        case 'set':
        case 'cas': {
          const cur = await this.read(op.key, overlay);
          note(cur, op.key);
          if (op.verb === 'cas') {
            const idx = cur ? BigInt(cur.kv.modRevision) : 0n;
            if (op.index === 0n ? cur !== undefined : idx !== op.index) {
              fail(cur ? `failed to set key ${JSON.stringify(op.key)}, index is stale` : `failed to set key ${JSON.stringify(op.key)}, does not exist`);
              break;
            }
          }
          // A plain write keeps the lock holder (Consul's KVSet).
          write(i, op.key, fake(op.key, op.value, op.flags, cur?.lockIndex ?? 0, cur?.session, cur));
          break;
        }
        case 'lock': {
          const s = this.sessions.get(op.session!);
          if (!s) {
            fail(`invalid session ${JSON.stringify(op.session)}`);
            break;
          }
          const cur = await this.read(op.key, overlay);
          note(cur, op.key);
          if (cur?.session && cur.session !== op.session) {
            fail(`failed to lock key ${JSON.stringify(op.key)}, lock is already held`);
            break;
          }
          if (!cur?.session && this.sessions.lockDelayUntil(op.key) > now) {
            fail(`failed to lock key ${JSON.stringify(op.key)}, lock delay is in effect`);
            break;
          }
          const lockIndex = cur?.session === op.session ? cur!.lockIndex : (cur?.lockIndex ?? 0) + 1;
          write(i, op.key, fake(op.key, op.value, op.flags, lockIndex, op.session, cur));
          break;
        }
        case 'unlock': {
          const cur = await this.read(op.key, overlay);
          note(cur, op.key);
          if (!this.sessions.get(op.session!) && cur?.session !== op.session) {
            fail(`invalid session ${JSON.stringify(op.session)}`);
            break;
          }
          if (!cur || cur.session !== op.session) {
            fail(`failed to unlock key ${JSON.stringify(op.key)}, lock isn't held, or is held by another session`);
            break;
          }
          write(i, op.key, fake(op.key, op.value, op.flags, cur.lockIndex, undefined, cur));
          break;
        }
        case 'delete': {
          const cur = await this.read(op.key, overlay);
          note(cur, op.key);
          write(i, op.key, null);
          break;
        }
        case 'delete-cas': {
          const cur = await this.read(op.key, overlay);
          note(cur, op.key);
          // Consul (kvsDeleteCASTxn): deleting a key that is not there succeeds, whatever the index.
          if (!cur) {
            plan.push({ i, kind: 'none' });
            break;
          }
          if (BigInt(cur.kv.modRevision) !== op.index) {
            fail(`failed to delete key ${JSON.stringify(op.key)}, index is stale`);
            break;
          }
          write(i, op.key, null);
          break;
        }
        case 'delete-tree': {
          for (const e of await this.readTree(op.key, overlay)) {
            note(e, e.key);
            overlay.set(e.key, null);
          }
          plan.push({ i, kind: 'write', key: op.key });
          break;
        }
      }
    }
    if (errors.length > 0) return { ok: false, results: [], errors, index: this.engine.publishedRevision };

    // Apply: the final state of every written key, one engine op each, CAS on the version read.
    const written = new Map<string, KeyValue>();
    const batch: BatchOp[] = [];
    const keys: string[] = [];
    for (const [key, e] of overlay) {
      if (!readVersion.has(key)) continue;
      const version = readVersion.get(key)!;
      if (e === null) {
        if (version === 0) continue;
        batch.push({ op: 'delete', key: engineKey(key), ifVersion: version });
      } else {
        const prev = before.get(key);
        if (prev && sameEntry(prev, e)) {
          // Consul (kvsSetTxn) skips a write that changes nothing: the ModifyIndex stays.
          written.set(key, prev.kv);
          continue;
        }
        const lease = e.session ? this.sessions.get(e.session) : undefined;
        batch.push({
          op: 'put',
          key: engineKey(key),
          value: e.kv.value,
          ...(version === 0 ? { ifAbsent: true } : { ifVersion: version }),
          ...(lease?.behavior === 'delete' ? { lease: lease.lease } : {}),
        });
      }
      keys.push(key);
    }
    if (batch.length > 0) {
      const res = await this.engine.batch(batch);
      for (let j = 0; j < res.length; j++) {
        const r = res[j]!;
        if ('error' in r) {
          const e = r.error;
          errors.push({ OpIndex: 0, What: e instanceof ConflictError ? `key ${JSON.stringify(keys[j])} was changed outside the Consul API during the transaction` : e.message });
          continue;
        }
        if ('kv' in r) written.set(keys[j]!, r.kv);
      }
      if (errors.length > 0) return { ok: false, results: [], errors, index: this.engine.publishedRevision };
    }
    const results: string[] = [];
    for (const p of plan) {
      if (p.kind === 'read') {
        for (const e of p.entries) {
          const kv = e.kv.modRevision === 0 ? written.get(e.key) : e.kv;
          results.push(kvEntryJson({ ...e, kv: kv ?? e.kv }));
        }
      } else if (p.kind === 'write') {
        const e = overlay.get(p.key);
        const kv = written.get(p.key);
        if (e && kv) results.push(kvEntryJson({ ...e, kv }, false));
      }
    }
    return { ok: true, results, errors: [], index: this.engine.publishedRevision };
  }
}

/** Consul's DirEntry.Equal: the same value, flags, lock index and session. */
function sameEntry(a: KvEntry, b: KvEntry): boolean {
  const av = a.value ?? Buffer.alloc(0);
  const bv = b.value ?? Buffer.alloc(0);
  return av.equals(bv) && a.flags === b.flags && a.lockIndex === b.lockIndex && (a.session ?? '') === (b.session ?? '');
}

/** Parse Consul's /v1/txn body: uint64 Flags / Index numbers above 2^53 are kept exact. */
export function parseTxnBody(text: string): unknown {
  // Quote long integers of Flags and Index before JSON.parse can round them.
  const safe = text.replace(/("(?:flags|index)"\s*:\s*)(\d{16,})/gi, '$1"$2"');
  try {
    return JSON.parse(safe);
  } catch (e) {
    throw new InvalidArgumentError(`malformed JSON body: ${(e as Error).message}`, { cause: e });
  }
}
