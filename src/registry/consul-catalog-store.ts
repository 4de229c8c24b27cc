/**
 * The store consulCatalogLayout() supplies (consul-catalog.ts, Layout.store): the engine's service
 * catalog as a Backend, so the Registrar and ServiceCache run over it unchanged. Keys are
 * `<service>/<id>`; a put registers (plus a TTL check bound to the session), a session passes its
 * checks on keepalive, a watch follows the health endpoint, a delete deregisters. See the header of
 * consul-catalog.ts.
 */
import { randomUUID } from 'node:crypto';
import type { Backend, DeleteOptions, PutOptions, Watch } from '../contract/types.js';
import type { DeleteResult, KeyValue, ListResult, PutResult } from '../core/kv.js';
import { BackendBase } from '../contract/base.js';
import type { LeaseSession } from '../contract/session.js';
import type { WatchStream } from '../contract/stream.js';
import type { ServiceCatalog } from '../contract/catalog.js';
import { formatGoDuration } from '../core/duration.js';
import { ConflictError, InvalidArgumentError, UnavailableError } from '../core/errors.js';

/** Consul's maintenance-mode check of an instance. */
export const MAINTENANCE_PREFIX = '_service_maintenance:';
/** The liveness check a session adds: `roster:<instance id>`. */
export const LIVENESS_PREFIX = 'roster:';

/** What the layout's `encode` writes: the registration, and whether the instance drains. */
export interface Encoded {
  registration: Record<string, unknown>;
  draining: boolean;
}

export interface StoreConfig {
  liveness: 'ttl' | 'none';
  /** DeregisterCriticalServiceAfter of the liveness check (ms). */
  dcsa: number;
  /** How long a put waits to see its registration in the health endpoint (ms). */
  visibleWithin: number;
}

interface Owned {
  readonly id: string;
  /** The liveness check this session passes, if it added one. */
  readonly checkId: string | undefined;
}

/**
 * The catalog as a Backend (see the file header): what the Registrar and ServiceCache read and write
 * when the layout is consulCatalogLayout(). Keys are `<service>/<id>`.
 */
export class ConsulCatalogStore extends BackendBase {
  readonly kind = 'consul-catalog';
  /** Instances registered by each live session of this store, by key. */
  private readonly bySession = new Map<string, Map<string, Owned>>();
  /** The session each key was last registered under by this store. */
  private readonly ownerOf = new Map<string, string>();

  constructor(
    backend: Backend,
    private readonly catalog: ServiceCatalog,
    private readonly cfg: StoreConfig,
  ) {
    // The Registrar or ServiceCache above holds the process; sessions here need not.
    super(`${backend.url}#catalog`, { keepProcessAlive: false });
  }

  private split(key: string): { service: string; id: string } {
    const i = key.indexOf('/');
    if (i <= 0 || i === key.length - 1 || key.indexOf('/', i + 1) >= 0) {
      throw new InvalidArgumentError(`invalid catalog key ${JSON.stringify(key)}: expected <service>/<instance id>`);
    }
    return { service: key.slice(0, i), id: key.slice(i + 1) };
  }

  private serviceOf(prefix: string): string {
    if (!prefix.endsWith('/') || prefix.indexOf('/') !== prefix.length - 1) {
      throw new InvalidArgumentError(`the Consul catalog is read one service at a time: expected the prefix "<service>/", got ${JSON.stringify(prefix)}`);
    }
    return prefix.slice(0, -1);
  }

  /** A catalog item as a key of this store, tagged with the session of ours that registered it. */
  private mapKv(service: string, kv: KeyValue): KeyValue {
    const key = `${service}/${kv.key}`;
    const owner = this.ownerOf.get(key);
    const { session: _ignored, ...rest } = kv;
    return { ...rest, key, ...(owner !== undefined ? { session: owner } : {}) };
  }

  private disown(key: string): void {
    const sid = this.ownerOf.get(key);
    if (sid === undefined) return;
    this.ownerOf.delete(key);
    this.bySession.get(sid)?.delete(key);
  }

  protected async grant(ttl: number): Promise<LeaseSession> {
    const sid = `catalog-${randomUUID()}`;
    const mine = new Map<string, Owned>();
    this.bySession.set(sid, mine);
    const end = () => {
      this.bySession.delete(sid);
      for (const [key] of mine) if (this.ownerOf.get(key) === sid) this.ownerOf.delete(key);
    };
    return this.lease(sid, ttl, {
      keepAlive: async () => {
        // Pass every liveness check of this session. An unknown check means the instance is gone
        // (deregistered, or reaped after being critical): the Registrar's repair view puts it back.
        await Promise.all([...mine.values()].filter((o) => o.checkId !== undefined).map((o) => this.catalog.updateCheck(o.checkId!, 'passing', { note: `passed by roster-sd (pid ${process.pid})` })));
      },
      revoke: async () => {
        const results = await Promise.allSettled([...mine.values()].map((o) => this.catalog.deregister(o.id)));
        end();
        const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
        if (failed) throw failed.reason;
      },
      abandon: end,
    });
  }

  protected async doGet(key: string, signal: AbortSignal | undefined): Promise<KeyValue | undefined> {
    const { service, id } = this.split(key);
    const l = await this.catalog.list(service, signal ? { signal } : {});
    const kv = l.items.find((x) => x.key === id);
    return kv && this.mapKv(service, kv);
  }

  protected async doList(prefix: string, signal: AbortSignal | undefined): Promise<ListResult> {
    if (prefix === '') {
      // Every service, one health read each (the catalog has no single read of everything); the
      // revision is the lowest of the reads, so nothing later is claimed as seen.
      const names = (await this.catalog.services(signal ? { signal } : {})).filter((n) => n !== 'consul');
      const lists = await Promise.all(names.map(async (n) => ({ n, l: await this.catalog.list(n, signal ? { signal } : {}) })));
      return {
        revision: lists.length ? Math.min(...lists.map((x) => x.l.revision)) : 0,
        items: lists.flatMap(({ n, l }) => l.items.map((kv) => this.mapKv(n, kv))).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0)),
      };
    }
    const service = this.serviceOf(prefix);
    const l = await this.catalog.list(service, signal ? { signal } : {});
    return { revision: l.revision, items: l.items.map((kv) => this.mapKv(service, kv)) };
  }

  protected doWatch(prefix: string, fromRevision: number | undefined, stream: WatchStream): void {
    const service = this.serviceOf(prefix);
    const inner: Watch = this.catalog.watch(service, fromRevision !== undefined ? { fromRevision } : {});
    stream.onStop(() => inner.close());
    inner.on('status', (st) => stream.status(st));
    void (async () => {
      try {
        for await (const ev of inner) {
          switch (ev.type) {
            case 'put':
              stream.push({ ...ev, key: `${service}/${ev.key}`, kv: this.mapKv(service, ev.kv) });
              break;
            case 'delete':
              stream.push({ ...ev, key: `${service}/${ev.key}`, ...(ev.prev ? { prev: this.mapKv(service, ev.prev) } : {}) });
              break;
            case 'reset':
              stream.push({ ...ev, items: ev.items.map((kv) => this.mapKv(service, kv)) });
              break;
            default:
              stream.push(ev);
          }
        }
        stream.end();
      } catch (e) {
        stream.end(e);
      }
    })();
  }

  protected async doPut(key: string, value: string, opts: PutOptions): Promise<PutResult> {
    const { service, id } = this.split(key);
    let enc: Encoded;
    try {
      enc = JSON.parse(value) as Encoded;
    } catch (e) {
      throw new InvalidArgumentError(`the Consul catalog stores what consulCatalogLayout().encode() makes, not ${JSON.stringify(value.slice(0, 80))}`, { cause: e });
    }
    if (!enc || typeof enc.registration !== 'object' || enc.registration.ID !== id || enc.registration.Name !== service) {
      throw new InvalidArgumentError(`catalog value for ${key} does not describe instance ${id} of ${service}`);
    }
    const sig = opts.signal ? { signal: opts.signal } : {};
    if (opts.ifAbsent || opts.ifVersion !== undefined) {
      // The agent API has no compare-and-set: check, then register.
      const cur = await this.doGet(key, opts.signal);
      const version = cur?.version ?? 0;
      if ((opts.ifAbsent && cur) || (opts.ifVersion !== undefined && opts.ifVersion !== version)) {
        throw new ConflictError(`instance ${key} is at version ${version}`, { details: { key, version } });
      }
    }
    const session = opts.session ? this.owned(opts.session) : undefined;
    const mine = session ? this.bySession.get(session.id) : undefined;
    if (opts.session && !mine) throw opts.session.signal.reason ?? new InvalidArgumentError(`session ${opts.session.id} is not one of this catalog store's`);
    const checkId = session && this.cfg.liveness === 'ttl' ? `${LIVENESS_PREFIX}${id}` : undefined;
    const extra = (enc.registration.Checks as unknown[] | undefined) ?? [];
    const definition = {
      ...enc.registration,
      Checks: [
        ...extra,
        ...(checkId
          ? [
              {
                CheckID: checkId,
                Name: 'roster-sd liveness',
                Notes: `passed by the registering process about every ${formatGoDuration(Math.round(session!.ttl / 3))}`,
                TTL: formatGoDuration(session!.ttl),
                Status: 'passing',
                DeregisterCriticalServiceAfter: formatGoDuration(this.cfg.dcsa),
              },
            ]
          : []),
      ],
    };
    if ((definition.Checks as unknown[]).length === 0) delete (definition as Record<string, unknown>).Checks;
    await this.catalog.register(definition, sig);
    this.disown(key);
    if (session && mine) {
      mine.set(key, { id, checkId });
      this.ownerOf.set(key, session.id);
    }
    let kv = await this.visible(service, id, opts.signal);
    if (isDraining(kv) !== enc.draining) {
      // Draining is Consul's maintenance mode (both mean "send no new traffic here").
      await this.catalog.maintenance(id, enc.draining, { reason: 'roster-sd: the instance is draining', ...sig });
      kv = (await this.catalog.list(service, sig)).items.find((x) => x.key === id) ?? kv;
    }
    const out = this.mapKv(service, kv);
    return { revision: out.modRevision, kv: out };
  }

  /** Wait (bounded) until the health endpoint shows instance `id` (a Consul agent syncs a
   *  registration to the catalog just after answering); its entry. */
  private async visible(service: string, id: string, signal: AbortSignal | undefined): Promise<KeyValue> {
    const deadline = Date.now() + this.cfg.visibleWithin;
    let index = 0;
    for (;;) {
      const left = deadline - Date.now();
      const l = await this.catalog.list(service, { ...(signal ? { signal } : {}), ...(index ? { waitIndex: index, waitMs: Math.max(1000, left) } : {}) });
      const kv = l.items.find((x) => x.key === id);
      if (kv) return kv;
      if (Date.now() >= deadline) throw new UnavailableError(`instance ${service}/${id} was registered but did not show in Consul's health endpoint within ${this.cfg.visibleWithin} ms`);
      index = l.revision;
    }
  }

  protected async doDelete(key: string, opts: DeleteOptions): Promise<DeleteResult> {
    const { service, id } = this.split(key);
    const cur = await this.doGet(key, opts.signal);
    if (opts.ifVersion !== undefined && (cur?.version ?? 0) !== opts.ifVersion) {
      throw new ConflictError(`instance ${key} is at version ${cur?.version ?? 0}`, { details: { key, version: cur?.version ?? 0 } });
    }
    const deleted = cur ? await this.catalog.deregister(id, opts.signal ? { signal: opts.signal } : {}) : false;
    this.disown(key);
    const l = await this.catalog.list(service, opts.signal ? { signal: opts.signal } : {});
    return { revision: l.revision, deleted };
  }

  protected async release(): Promise<void> {
    // The backend underneath is the caller's: nothing of its own to release.
  }

  protected abandon(): void {
    // As release().
  }
}

function isDraining(kv: KeyValue): boolean {
  try {
    const e = JSON.parse(kv.value) as { Checks?: { CheckID?: unknown }[] };
    return (e.Checks ?? []).some((c) => typeof c.CheckID === 'string' && c.CheckID.startsWith(MAINTENANCE_PREFIX));
  } catch {
    return false;
  }
}
