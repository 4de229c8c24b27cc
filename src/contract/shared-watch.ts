import type { Watch, WatchStatus } from './types.js';
import type { KeyValue, WatchEvent } from '../core/kv.js';
import type { WatchStream } from './stream.js';

/**
 * Watches of one process that watch the same prefix with the same options share one upstream
 * watch (for the remote backend: one SSE connection), so the server writes an event once per
 * process and the client parses it once, however many watchers there are (issue 17; etcd's Go
 * client multiplexes its watchers over one stream the same way). Backend-independent: `open`
 * opens the upstream Watch. Only watches without `fromRevision` share (the backend routes those
 * with one to their own stream); the key is the prefix and the progress flag.
 *
 * The hub keeps a mirror of the upstream (key -> KeyValue, the revision it is complete at and
 * whether it has synced). A subscriber that joins gets, synchronously, one `put` per mirrored key
 * (at the mirror's revision, in key order), then `synced` if the upstream has synced (else it
 * receives the rest of the upstream's snapshot and its `synced` like everyone), then every later
 * upstream event: nothing is missed or repeated, because joining and fan-out both run inside the
 * hub, between two upstream events. Subscribers receive the same event objects, frozen. Each subscriber is its own WatchStream (own unbounded queue,
 * as a separate watch has: a slow reader delays nobody). A subscriber's close/break/abort only
 * removes it; the last one to leave closes the upstream. Upstream `status` edges go to every
 * subscriber, and one that joins during an outage is told `connected: false` too; the upstream's
 * end (normal or a terminal error) ends every subscriber the same way.
 */
export class SharedWatches {
  private readonly hubs = new Map<string, Hub>();

  constructor(private readonly open: (prefix: string, opts: { progress: boolean }) => Watch) {}

  /** Number of upstream watches open (diagnostics, tests). */
  get size(): number {
    return this.hubs.size;
  }

  /** Feed `sub` (a fresh stream, no fromRevision) from the shared upstream of its prefix. */
  join(prefix: string, sub: WatchStream): void {
    const key = `${sub.progress ? 'p' : '-'}${prefix}`;
    let hub = this.hubs.get(key);
    if (hub === undefined || hub.ending) {
      hub = new Hub(this.open(prefix, { progress: sub.progress }), () => {
        if (this.hubs.get(key) === hub) this.hubs.delete(key);
      });
      this.hubs.set(key, hub);
    }
    hub.add(sub);
  }
}

const DIAGNOSTICS = ['reconnects', 'lastError'];

class Hub {
  private readonly subs = new Set<WatchStream>();
  private readonly mirror = new Map<string, KeyValue>();
  private revision = 0;
  private synced = false;
  /** The upstream's last reported outage, until it is resumed. */
  private down: { error: unknown } | undefined;
  /** The mirror in key order, kept until the mirror changes (many joiners, one sort). */
  private sorted: KeyValue[] | undefined;
  /** The upstream has ended or is being closed: joiners open a new hub. */
  ending = false;

  constructor(
    private readonly upstream: Watch,
    private readonly gone: () => void,
  ) {
    upstream.on('status', (st: WatchStatus) => {
      this.down = st.connected ? undefined : { error: st.error };
      for (const s of this.subs) s.status(st);
    });
    void this.pump();
  }

  add(sub: WatchStream): void {
    if (sub.ended) return;
    this.subs.add(sub);
    sub.onStop(() => this.remove(sub));
    // A backend's diagnostics on its stream (remote: `reconnects`, `lastError`; not part of Watch)
    // read through to the upstream's.
    const up = this.upstream as unknown as Record<string, unknown>;
    for (const name of DIAGNOSTICS) if (name in up && !(name in sub)) Object.defineProperty(sub, name, { get: () => up[name] });
    if (this.mirror.size > 0) {
      if (this.sorted === undefined) this.sorted = [...this.mirror.values()].sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
      for (const kv of this.sorted) sub.push(Object.freeze({ type: 'put', key: kv.key, kv, revision: this.revision }));
    }
    if (this.synced) sub.push(Object.freeze({ type: 'synced', revision: this.revision }));
    if (this.down !== undefined) {
      // After the caller has had the chance to listen (watch() returns first); not if the
      // upstream came back meanwhile.
      queueMicrotask(() => {
        if (this.down !== undefined && this.subs.has(sub)) sub.status({ connected: false, error: this.down.error });
      });
    }
  }

  private remove(sub: WatchStream): void {
    if (!this.subs.delete(sub) || this.subs.size > 0 || this.ending) return;
    this.ending = true;
    this.gone();
    this.upstream.close();
  }

  private apply(ev: WatchEvent): void {
    switch (ev.type) {
      case 'put':
        this.mirror.set(ev.key, ev.kv);
        this.sorted = undefined;
        break;
      case 'delete':
        this.mirror.delete(ev.key);
        this.sorted = undefined;
        break;
      case 'reset':
        this.mirror.clear();
        for (const kv of ev.items) this.mirror.set(kv.key, kv);
        this.sorted = undefined;
        this.synced = false; // `synced` follows
        break;
      case 'synced':
        this.synced = true;
        break;
    }
    this.revision = ev.revision;
  }

  private async pump(): Promise<void> {
    let error: unknown;
    try {
      for await (const ev of this.upstream) {
        freeze(ev);
        this.apply(ev);
        for (const s of this.subs) s.push(ev);
      }
    } catch (e) {
      error = e ?? new Error('watch failed');
    }
    this.ending = true;
    this.gone();
    for (const s of [...this.subs]) s.end(error);
    this.subs.clear();
  }
}

/** Every subscriber receives the same event objects: frozen, as the engine's own events are. */
function freeze(ev: WatchEvent): void {
  if (Object.isFrozen(ev)) return;
  if (ev.type === 'put') Object.freeze(ev.kv);
  else if (ev.type === 'delete' && ev.prev) Object.freeze(ev.prev);
  else if (ev.type === 'reset') {
    for (const kv of ev.items) Object.freeze(kv);
    Object.freeze(ev.items);
  }
  Object.freeze(ev);
}
