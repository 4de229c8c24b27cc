import type {
  Backend,
  DeleteOptions,
  DeleteResult,
  KeyValue,
  ListResult,
  PutOptions,
  PutResult,
  Session,
  SessionOptions,
  Watch,
  WatchEvent,
  WatchOptions,
} from '../backend/types.js';
import { KeepaliveSession } from '../backend/session.js';
import { Engine } from '../engine/engine.js';
import { Channel } from '../core/channel.js';
import { abortReason, throwIfAborted } from '../core/async.js';
import { ClosedError, InvalidArgumentError } from '../core/errors.js';
import { validateKey, validatePrefix, validateValue } from '../core/names.js';
import { parseTtl } from '../core/duration.js';

/** Named in-process engines: `memory://a` opened twice in one process shares one store. */
const shared = new Map<string, { engine: Engine; refs: number }>();

/**
 * The backend contract over an in-process Engine. Also the reference implementation the
 * conformance suite is first written against. Sessions run a real keepalive, so `orphan()` lets a
 * lease expire exactly as a crashed process's would.
 */
export class EngineBackend implements Backend {
  readonly kind: string = 'memory';
  private sessions = new Set<KeepaliveSession>();
  private watches = new Set<Channel<WatchEvent>>();
  private closed = false;

  constructor(
    readonly engine: Engine,
    readonly url: string,
    private readonly release: () => Promise<void> = () => engine.close(),
  ) {}

  private check(signal?: AbortSignal): void {
    if (this.closed) throw new ClosedError(`backend ${this.url} is closed`);
    throwIfAborted(signal);
  }

  async session(opts: SessionOptions): Promise<Session> {
    this.check(opts.signal);
    const ttl = parseTtl(opts.ttl);
    const { id } = await this.engine.grant(ttl);
    const s: KeepaliveSession = new KeepaliveSession(id, ttl, {
      keepAlive: async () => void this.engine.keepAlive(id),
      revoke: () => this.engine.revoke(id),
      onEnd: () => this.sessions.delete(s),
    });
    this.sessions.add(s);
    return s;
  }

  async get(key: string, opts: { signal?: AbortSignal } = {}): Promise<KeyValue | undefined> {
    this.check(opts.signal);
    return this.engine.get(validateKey(key));
  }

  async put(key: string, value: string, opts: PutOptions = {}): Promise<PutResult> {
    this.check(opts.signal);
    validateKey(key);
    validateValue(value);
    checkVersion(opts.ifVersion);
    if (opts.session?.signal.aborted) throw opts.session.signal.reason;
    return this.engine.put(key, value, {
      ...(opts.session ? { lease: opts.session.id } : {}),
      ...(opts.ifAbsent ? { ifAbsent: true } : {}),
      ...(opts.ifVersion !== undefined ? { ifVersion: opts.ifVersion } : {}),
    });
  }

  async delete(key: string, opts: DeleteOptions = {}): Promise<DeleteResult> {
    this.check(opts.signal);
    validateKey(key);
    checkVersion(opts.ifVersion);
    return this.engine.delete(key, opts.ifVersion !== undefined ? { ifVersion: opts.ifVersion } : {});
  }

  async list(prefix: string, opts: { signal?: AbortSignal } = {}): Promise<ListResult> {
    this.check(opts.signal);
    return this.engine.list(validatePrefix(prefix));
  }

  watch(prefix: string, opts: WatchOptions = {}): Watch {
    this.check(opts.signal);
    validatePrefix(prefix);
    if (opts.fromRevision !== undefined && (!Number.isInteger(opts.fromRevision) || opts.fromRevision < 0)) {
      throw new InvalidArgumentError(`invalid fromRevision ${opts.fromRevision}: expected a non-negative integer`);
    }
    const signal = opts.signal;
    const onAbort = () => ch.end(abortReason(signal!));
    const ch: Channel<WatchEvent> = new Channel<WatchEvent>(() => {
      sub.cancel();
      this.watches.delete(ch);
      signal?.removeEventListener('abort', onAbort);
    });
    const sub = this.engine.subscribe(prefix, opts.fromRevision, (ev) => ch.push(ev));
    this.watches.add(ch);
    if (sub.snapshot) {
      const { revision, items } = sub.snapshot;
      if (sub.reset) ch.push({ type: 'reset', revision, items });
      else for (const kv of items) ch.push({ type: 'put', key: kv.key, kv, revision });
      ch.push({ type: 'synced', revision });
    } else {
      for (const ev of sub.backlog) ch.push(ev);
    }
    signal?.addEventListener('abort', onAbort, { once: true });
    return Object.assign(ch, { close: () => void ch.return() });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const results = await Promise.allSettled([...this.sessions].map((s) => s.close()));
    for (const w of [...this.watches]) w.end();
    await this.release();
    const errors = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected').map((r) => r.reason as unknown);
    if (errors.length > 0) throw new AggregateError(errors, `closing ${this.url}: ${errors.length} session(s) failed to close`);
  }

  destroy(err?: Error): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of [...this.sessions]) s.orphan();
    for (const w of [...this.watches]) w.end(err ?? new ClosedError(`backend ${this.url} destroyed`));
    void this.release().catch(() => undefined);
  }
}

function checkVersion(v: number | undefined): void {
  if (v !== undefined && (!Number.isInteger(v) || v < 0)) {
    throw new InvalidArgumentError(`invalid ifVersion ${v}: expected a non-negative integer (0 = must not exist)`);
  }
}

export class MemoryBackend extends EngineBackend {
  override readonly kind = 'memory';

  /** `memory://` → a private store; `memory://name` → the store shared under that name in this process. */
  static async open(url = 'memory://'): Promise<MemoryBackend> {
    const m = /^memory:\/\/([A-Za-z0-9._-]*)\/?$/.exec(url);
    if (!m) throw new InvalidArgumentError(`invalid memory URL ${JSON.stringify(url)}: expected memory:// or memory://<name>`);
    const name = m[1]!;
    if (name === '') {
      const engine = await Engine.open();
      return new MemoryBackend(engine, url);
    }
    let entry = shared.get(name);
    if (!entry) {
      const engine = await Engine.open();
      // A concurrent open() of the same name may have registered its engine while we awaited.
      entry = shared.get(name);
      if (!entry) shared.set(name, (entry = { engine, refs: 0 }));
      else await engine.close();
    }
    entry.refs++;
    const e = entry;
    return new MemoryBackend(e.engine, url, async () => {
      if (--e.refs === 0 && shared.get(name) === e) {
        shared.delete(name);
        await e.engine.close();
      }
    });
  }
}
