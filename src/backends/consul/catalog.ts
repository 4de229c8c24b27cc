import type { ServiceCatalog } from '../../contract/catalog.js';
import type { Watch, WatchOptions } from '../../contract/types.js';
import type { ListResult } from '../../core/kv.js';
import type { HealthStatus } from '../../core/checks.js';
import { RosterError, UnavailableError } from '../../core/errors.js';
import { validateServiceName } from '../../core/names.js';
import { replyMessage, type ConsulTransport } from './transport.js';
import type { PolledItem, PollResult } from './watch.js';

/**
 * Consul's service catalog through its agent (api/agent.go, api/health.go): registration with the
 * local agent (`PUT /v1/agent/service/register?replace-existing-checks`, so a registration is the
 * whole truth about its checks), TTL check updates (`PUT /v1/agent/check/update/<id>`), maintenance
 * mode, deregistration; and the instances of a service with their health, read from
 * `GET /v1/health/service/<name>` (blocking queries; watched like a KV prefix, watch.ts).
 *
 * Keys of the read side: an instance's Consul ID. Consul IDs are unique per agent, not per cluster
 * (the default ID is the service name): when two nodes carry the same ID, the one on this client's
 * own agent keeps the plain ID and every other gets `<ID>@<node>`, so keys stay unique and a
 * Registrar's own instance keeps the key it wrote. Values are the ServiceEntry JSON ({Node,
 * Service, Checks}); createRevision is the service's CreateIndex, modRevision the highest
 * ModifyIndex of the service, its node and its checks (a health change is a change).
 */
export class ConsulCatalog implements ServiceCatalog {
  readonly kind = 'consul';
  private node: Promise<string | undefined> | undefined;

  constructor(
    private readonly t: ConsulTransport,
    private readonly opts: { waitMs: number; watch: (service: string, opts: WatchOptions) => Watch },
  ) {}

  async register(definition: Readonly<Record<string, unknown>>, o: { signal?: AbortSignal } = {}): Promise<void> {
    const r = await this.t.request('PUT', '/v1/agent/service/register', { query: { 'replace-existing-checks': 'true' }, body: JSON.stringify(definition), ...(o.signal ? { signal: o.signal } : {}) });
    if (r.status !== 200) throw this.t.fail(r, `register service ${String(definition.ID ?? definition.Name)}`);
  }

  async deregister(id: string, o: { signal?: AbortSignal } = {}): Promise<boolean> {
    const r = await this.t.request('PUT', `/v1/agent/service/deregister/${encodeURIComponent(id)}`, { ...(o.signal ? { signal: o.signal } : {}) });
    if (r.status === 200) return true;
    if (unknown(r)) return false;
    throw this.t.fail(r, `deregister service ${id}`);
  }

  async updateCheck(checkId: string, status: HealthStatus, o: { note?: string; signal?: AbortSignal } = {}): Promise<boolean> {
    const r = await this.t.request('PUT', `/v1/agent/check/update/${encodeURIComponent(checkId)}`, {
      body: JSON.stringify({ Status: status, Output: o.note ?? '' }),
      ...(o.signal ? { signal: o.signal } : {}),
    });
    if (r.status === 200) return true;
    if (unknown(r)) return false;
    throw this.t.fail(r, `update check ${checkId}`);
  }

  async maintenance(id: string, enable: boolean, o: { reason?: string; signal?: AbortSignal } = {}): Promise<boolean> {
    const r = await this.t.request('PUT', `/v1/agent/service/maintenance/${encodeURIComponent(id)}`, {
      query: { enable: String(enable), ...(enable && o.reason ? { reason: o.reason } : {}) },
      ...(o.signal ? { signal: o.signal } : {}),
    });
    if (r.status === 200) return true;
    if (unknown(r)) return false;
    throw this.t.fail(r, `maintenance of service ${id}`);
  }

  async list(service: string, o: { signal?: AbortSignal; waitIndex?: number; waitMs?: number } = {}): Promise<ListResult> {
    const r = await this.read(service, o.waitIndex ?? 0, o.waitMs ?? this.opts.waitMs, o.signal);
    return { revision: r.index, items: r.items.map((it) => it.kv()) };
  }

  /** GET /v1/catalog/services: every service name (with its tags, which are not needed here). */
  async services(o: { signal?: AbortSignal } = {}): Promise<string[]> {
    const r = await this.t.request('GET', '/v1/catalog/services', { idempotent: true, ...(o.signal ? { signal: o.signal } : {}) });
    if (r.status !== 200) throw this.t.fail(r, 'list services');
    let names: unknown;
    try {
      names = JSON.parse(r.text);
    } catch (e) {
      throw new UnavailableError(`list services on ${this.t.url}: the reply was not JSON`, { cause: e });
    }
    if (names === null || typeof names !== 'object' || Array.isArray(names)) throw new UnavailableError(`list services on ${this.t.url}: expected a JSON object of service names`);
    return Object.keys(names).sort();
  }

  watch(service: string, opts: WatchOptions = {}): Watch {
    validateServiceName(service);
    return this.opts.watch(service, opts);
  }

  /** The name of the node of the agent this client talks to (once; undefined if it cannot tell). */
  private localNode(): Promise<string | undefined> {
    this.node ??= this.t.request('GET', '/v1/agent/self', { idempotent: true }).then(
      (r) => {
        if (r.status !== 200) return undefined;
        try {
          const name = (JSON.parse(r.text) as { Config?: { NodeName?: unknown } }).Config?.NodeName;
          return typeof name === 'string' ? name : undefined;
        } catch {
          return undefined;
        }
      },
      () => {
        this.node = undefined; // try again next time
        return undefined;
      },
    );
    return this.node;
  }

  /** GET /v1/health/service/<name>, optionally blocking. */
  async read(service: string, index: number, waitMs: number, signal: AbortSignal | undefined): Promise<PollResult> {
    validateServiceName(service);
    const local = await this.localNode();
    const r = await this.t.read(`/v1/health/service/${encodeURIComponent(service)}`, index, waitMs, signal);
    if (r.status !== 200) throw this.t.fail(r, `health of service ${service}`);
    if (r.index === undefined) throw new UnavailableError(`health of service ${service} on ${this.t.url}: the reply carried no X-Consul-Index`);
    let entries: unknown;
    try {
      entries = JSON.parse(r.text);
    } catch (e) {
      throw new RosterError('INTERNAL', `malformed health reply from Consul: ${r.text.slice(0, 200)}`, { cause: e });
    }
    if (!Array.isArray(entries)) throw new RosterError('INTERNAL', `malformed health reply from Consul: expected an array: ${r.text.slice(0, 200)}`);
    const parsed: { id: string; node: string; entry: Record<string, unknown>; create: number; mod: number }[] = [];
    for (const e of entries as Record<string, unknown>[]) {
      const svc = e?.Service as Record<string, unknown> | undefined;
      const node = e?.Node as Record<string, unknown> | undefined;
      if (!svc || typeof svc.ID !== 'string' || svc.ID === '') continue;
      let mod = num(svc.ModifyIndex);
      mod = Math.max(mod, num(node?.ModifyIndex));
      if (Array.isArray(e.Checks)) for (const c of e.Checks as Record<string, unknown>[]) mod = Math.max(mod, num(c?.ModifyIndex));
      parsed.push({ id: svc.ID, node: typeof node?.Node === 'string' ? node.Node : '', entry: e, create: num(svc.CreateIndex), mod });
    }
    const count = new Map<string, number>();
    for (const p of parsed) count.set(p.id, (count.get(p.id) ?? 0) + 1);
    const items: PolledItem[] = parsed.map((p) => {
      const key = count.get(p.id)! > 1 && p.node !== local ? `${p.id}@${p.node}` : p.id;
      return {
        key,
        createRevision: p.create,
        modRevision: p.mod,
        kv: () => ({ key, value: JSON.stringify(p.entry), createRevision: p.create, modRevision: p.mod, version: p.mod }),
      };
    });
    items.sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));
    return { index: r.index, items };
  }
}

function num(v: unknown): number {
  return typeof v === 'number' && Number.isFinite(v) ? v : 0;
}

/** The agent does not know the service or check (Consul answers 404; older agents a 500 that says so). */
function unknown(r: { status: number; text: string }): boolean {
  return r.status === 404 || (r.status === 500 && /unknown (service|check)|does not have associated TTL/i.test(replyMessage(r.text)));
}
