/**
 * The one reader behind the DNS interface (./dns) and Prometheus HTTP SD (./promsd): every instance
 * under the registry's `services/` prefix (roster layout), decoded and grouped by service, kept
 * current by the shared list + watch view (contract/watched-prefix.ts) over a Backend: the server's
 * own engine (wrapped, never closed by the view) or any backend URL.
 *
 * Health: the status of an instance's health checks, read from the stored instance JSON: its
 * `health` field, else a `status` of "passing" | "warning" | "critical"; anything else (absent)
 * counts as passing. Instances roster cannot decode are left out (and counted in `skipped`).
 */
import type { Backend } from '../contract/types.js';
import { WatchedPrefix, type PrefixChange } from '../contract/watched-prefix.js';
import { MemoryBackend } from '../backends/memory/backend.js';
import type { KeyValue } from '../core/kv.js';
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
const layout = rosterLayout();

export class ServicesView {
  private readonly byService = new Map<string, Map<string, ViewInstance>>();
  private readonly view: WatchedPrefix;
  private readonly ownedBackend: Backend | undefined;
  /** Resolves once the first snapshot is in (the view answers from then on), or the view ended. */
  readonly ready: Promise<void>;
  /** Entries under services/ that did not decode as instances (left out). */
  skipped = 0;

  constructor(source: ViewSource) {
    // A view of the server's own engine: closing the view must not close the engine.
    this.ownedBackend = source.engine ? MemoryBackend.overEngine(source.engine, 'memory://server-view') : undefined;
    // The server's own reader must not keep a closing process alive.
    this.view = new WatchedPrefix(this.ownedBackend ?? source.backend!, PREFIX, { keepProcessAlive: false });
    this.view.on('change', ({ changes }) => {
      for (const c of changes) this.apply(c);
    });
    this.ready = this.view.ready().then(
      () => undefined,
      () => undefined,
    );
  }

  /** Open a view and wait for its first snapshot. */
  static async open(source: ViewSource): Promise<ServicesView> {
    const v = new ServicesView(source);
    await v.ready;
    return v;
  }

  /** Revision of the last change applied. */
  get revision(): number {
    return this.view.revision;
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
    this.view.close();
    await this.ownedBackend?.close();
  }

  private apply(c: PrefixChange): void {
    this.remove(c.key);
    if (c.type === 'delete') return;
    const p = this.parse(c.kv);
    if (!p) return;
    let m = this.byService.get(p.service);
    if (!m) this.byService.set(p.service, (m = new Map()));
    m.set(c.key, p.entry);
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
      const instance = layout.decode(service, { ...kv, value });
      return instance ? { service, entry: { instance, health } } : undefined;
    } catch {
      this.skipped++;
      return undefined;
    }
  }

  private remove(key: string): void {
    const rest = key.slice(PREFIX.length);
    const service = rest.slice(0, Math.max(0, rest.indexOf('/')));
    const m = this.byService.get(service);
    if (!m) return;
    m.delete(key);
    if (m.size === 0) this.byService.delete(service);
  }
}
