import type { DeleteOptions, PutOptions } from '../../contract/types.js';
import type { DeleteResult, KeyValue, ListResult, PutResult } from '../../core/kv.js';
import { BackendBase } from '../../contract/base.js';
import type { LeaseSession } from '../../contract/session.js';
import type { WatchStream } from '../../contract/stream.js';
import { commonOptionSpec, readOptions, type CommonBackendOptions, type OptionSpec } from '../../contract/options.js';
import { Engine } from '../../engine/engine.js';
import { InvalidArgumentError } from '../../core/errors.js';

/** memory:// takes no options of its own. */
export type MemoryBackendOptions = CommonBackendOptions;
const spec: OptionSpec<MemoryBackendOptions> = commonOptionSpec;

/** Named in-process engines: `memory://a` opened twice in one process shares one store. */
const shared = new Map<string, { engine: Engine; refs: number }>();
/** The engine behind each backend: reachable from roster's own testing fixtures, not from the API. */
const engines = new WeakMap<MemoryBackend, Engine>();

/** @internal The engine behind a memory:// backend (testing fixtures compact and revoke through it). */
export function engineOf(b: MemoryBackend): Engine {
  return engines.get(b)!;
}

/**
 * The backend contract over an in-process Engine: `memory://` (a private store) or
 * `memory://name` (the store shared under that name in this process). Also the reference
 * implementation the conformance suite is first written against. Sessions run a real keepalive,
 * so `orphan()` lets a lease expire exactly as a crashed process's would.
 */
export class MemoryBackend extends BackendBase {
  readonly kind = 'memory';
  private readonly engine: Engine;

  /** In-process calls never wait on the network: no process hold per call (contract/base.ts). */
  protected override get callsWaitOnNetwork(): boolean {
    return false;
  }

  protected override get atomicLastValue(): boolean {
    return true;
  }

  private constructor(
    engine: Engine,
    url: string,
    options: MemoryBackendOptions,
    private readonly releaseEngine: () => Promise<void>,
  ) {
    super(url, options);
    this.engine = engine;
    engines.set(this, engine);
  }

  /** @internal A backend over an engine the caller owns (the server's own views of its registry):
   *  close() ends its sessions and watches and leaves the engine open. */
  static overEngine(engine: Engine, url = 'memory://server'): MemoryBackend {
    return new MemoryBackend(engine, url, {}, async () => undefined);
  }

  static async open(url = 'memory://', options: MemoryBackendOptions = {}): Promise<MemoryBackend> {
    const m = /^memory:\/\/([A-Za-z0-9._-]*)\/?$/.exec(url);
    if (!m) throw new InvalidArgumentError(`invalid memory URL ${JSON.stringify(url)}: expected memory:// or memory://<name>`);
    const opts = readOptions('memory', spec, options);
    const name = m[1]!;
    if (name === '') {
      const engine = await Engine.open();
      return new MemoryBackend(engine, url, opts, () => engine.close());
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
    return new MemoryBackend(e.engine, url, opts, async () => {
      if (--e.refs === 0 && shared.get(name) === e) {
        shared.delete(name);
        await e.engine.close();
      }
    });
  }

  protected async grant(ttl: number): Promise<LeaseSession> {
    const { id } = await this.engine.grant(ttl);
    return this.lease(id, ttl, {
      keepAlive: async () => void this.engine.keepAlive(id),
      revoke: () => this.engine.revoke(id),
    });
  }

  protected async doGet(key: string): Promise<KeyValue | undefined> {
    return this.engine.get(key);
  }

  protected doPut(key: string, value: string, opts: PutOptions): Promise<PutResult> {
    return this.engine.put(key, value, {
      ...(opts.session ? { lease: opts.session.id } : {}),
      ...(opts.ifAbsent ? { ifAbsent: true } : {}),
      ...(opts.ifVersion !== undefined ? { ifVersion: opts.ifVersion } : {}),
    });
  }

  protected doDelete(key: string, opts: DeleteOptions): Promise<DeleteResult> {
    return this.engine.delete(key, {
      ...(opts.ifVersion !== undefined ? { ifVersion: opts.ifVersion } : {}),
      ...(opts.lastValue !== undefined ? { lastValue: opts.lastValue, lease: opts.session!.id } : {}),
    });
  }

  protected doList(prefix: string): Promise<ListResult> {
    return this.engine.list(prefix);
  }

  protected doWatch(prefix: string, fromRevision: number | undefined, stream: WatchStream): void {
    const sub = this.engine.subscribe(prefix, fromRevision, (ev) => stream.push(ev));
    stream.onStop(() => sub.cancel());
    if (sub.snapshot) {
      const { revision, items } = sub.snapshot;
      if (sub.reset) stream.push({ type: 'reset', revision, items });
      else for (const kv of items) stream.push({ type: 'put', key: kv.key, kv, revision });
      stream.push({ type: 'synced', revision });
    } else {
      for (const ev of sub.backlog) stream.push(ev);
    }
  }

  protected release(): Promise<void> {
    return this.releaseEngine();
  }

  protected abandon(): void {
    void this.releaseEngine().catch(() => undefined);
  }
}
