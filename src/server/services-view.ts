/**
 * The one reader behind the DNS interface (./dns) and Prometheus HTTP SD (./promsd): a live view
 * of every instance under the registry's `services/` prefix (roster layout), by list + watch over
 * a Backend: the server's own engine (wrapped, never closed by the view) or any backend URL.
 *
 * It is deliberately one small file so it can be swapped for a shared list+watch view of the
 * registry when one exists; consumers only use `services()`, `instances(service)` and `ready`.
 *
 * Health: the status of an instance's health checks, read from the stored instance JSON: its
 * `health` field, else a `status` of "passing" | "warning" | "critical"; anything else (absent)
 * counts as passing. Instances roster cannot decode are left out (and counted in `skipped`).
 */
import type { Backend, KeyValue } from '../backend/types.js';
import { EngineBackend } from '../backends/memory.js';
import { backoff, sleep } from '../core/async.js';
import { ClosedError } from '../core/errors.js';
import type { Instance } from '../core/model.js';
import type { Engine } from '../engine/engine.js';
import { rosterLayout } from '../registry/layout.js';

export type Health = 'passing' | 'warning' | 'critical';

export interface ViewInstance {
  readonly instance: Instance;
  readonly health: Health;
}

export type ViewSource = { engine: Engine; backend?: never } | { backend: Backend; engine?: never };

const HEALTH = new Set<unknown>(['passing', 'warning', 'critical']);
const PREFIX = 'services/';

export class ServicesView {
  private readonly byService = new Map<string, Map<string, ViewInstance>>();
  private readonly ac = new AbortController();
  private readonly layout = rosterLayout();
  private readonly backend: Backend;
  private readonly ownsBackend: boolean;
  private loop: Promise<void> | undefined;
  private synced!: () => void;
  /** Resolves once the first snapshot is in (the view answers from then on). */
  readonly ready: Promise<void>;
  /** Entries under services/ that did not decode as instances (left out). */
  skipped = 0;
  /** Revision of the last event applied. */
  revision = 0;

  constructor(source: ViewSource) {
    if ('engine' in source && source.engine) {
      // A view of the server's own engine: closing the view must not close the engine.
      this.backend = new EngineBackend(source.engine, 'memory://server-view', async () => undefined);
      this.ownsBackend = true;
    } else {
      this.backend = source.backend!;
      this.ownsBackend = false;
    }
    this.ready = new Promise((resolve) => (this.synced = resolve));
    this.loop = this.run();
  }

  /** Open a view and wait for its first snapshot. */
  static async open(source: ViewSource): Promise<ServicesView> {
    const v = new ServicesView(source);
    await v.ready;
    return v;
  }

  /** Names of the services with at least one instance, sorted. */
  services(): string[] {
    return [...this.byService.keys()].sort();
  }

  /** The instances of `service` (any health), in key order. */
  instances(service: string): ViewInstance[] {
    const m = this.byService.get(service);
    return m ? [...m.values()] : [];
  }

  async close(): Promise<void> {
    this.ac.abort(new ClosedError('services view closed'));
    await this.loop;
    this.loop = undefined;
    if (this.ownsBackend) await this.backend.close();
  }

  private async run(): Promise<void> {
    let attempt = 0;
    while (!this.ac.signal.aborted) {
      try {
        let fresh: Map<string, Map<string, ViewInstance>> | undefined = new Map();
        for await (const ev of this.backend.watch(PREFIX, { signal: this.ac.signal })) {
          const target = fresh ?? this.byService;
          if (ev.type === 'put') this.put(target, ev.kv);
          else if (ev.type === 'delete') this.remove(target, ev.key);
          else if (ev.type === 'reset') {
            fresh = new Map();
            for (const kv of ev.items) this.put(fresh, kv);
          } else if (fresh) {
            // synced: the snapshot is complete; swap it in whole so readers never see half of one.
            this.byService.clear();
            for (const [k, v] of fresh) this.byService.set(k, v);
            fresh = undefined;
            attempt = 0;
            this.synced();
          }
          this.revision = Math.max(this.revision, ev.revision);
        }
      } catch {
        // The watch failed (backend down, closed): keep the last known view and start over.
      }
      if (this.ac.signal.aborted) break;
      await sleep(backoff(attempt++, 100, 5000), this.ac.signal).catch(() => undefined);
    }
    this.synced(); // never leave `ready` pending on close
  }

  private parse(kv: KeyValue): { service: string; entry: ViewInstance } | undefined {
    const rest = kv.key.slice(PREFIX.length);
    const slash = rest.indexOf('/');
    if (slash <= 0) return undefined;
    const service = rest.slice(0, slash);
    try {
      const raw = JSON.parse(kv.value) as Record<string, unknown>;
      const h = raw.health ?? raw.status;
      const health: Health = HEALTH.has(h) ? (h as Health) : 'passing';
      // A health value in `status` is not an InstanceStatus: let the model read the rest.
      const value = HEALTH.has(raw.status) ? JSON.stringify({ ...raw, status: undefined }) : kv.value;
      const instance = this.layout.decode(service, { ...kv, value });
      return instance ? { service, entry: { instance, health } } : undefined;
    } catch {
      this.skipped++;
      return undefined;
    }
  }

  private put(target: Map<string, Map<string, ViewInstance>>, kv: KeyValue): void {
    this.remove(target, kv.key);
    const p = this.parse(kv);
    if (!p) return;
    let m = target.get(p.service);
    if (!m) target.set(p.service, (m = new Map()));
    m.set(kv.key, p.entry);
  }

  private remove(target: Map<string, Map<string, ViewInstance>>, key: string): void {
    const rest = key.slice(PREFIX.length);
    const service = rest.slice(0, Math.max(0, rest.indexOf('/')));
    const m = target.get(service);
    if (!m) return;
    m.delete(key);
    if (m.size === 0) target.delete(service);
  }
}
