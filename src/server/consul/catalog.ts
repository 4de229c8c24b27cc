import { isHealthStatus } from '../../core/checks.js';
import { InvalidArgumentError } from '../../core/errors.js';
import { validateServiceName } from '../../core/names.js';
import { decodeSegment, type ApiContext, type Req, type Route } from './context.js';
import { SERVICES_ROOT } from './hub.js';
import { agentServiceJson, allPassing, catalogServiceJson, nodeJson, serviceChecksJson, serviceTags, type ServiceRecord } from './records.js';
import { parseBlocking, send } from './wire.js';

/** /v1/catalog and /v1/health: blocking reads over the instances (roster layout) and checks. */
export class CatalogRoutes {
  constructor(private readonly c: ApiContext) {}

  register(ex: Route, pre: Route): void {
    ex('/v1/catalog/services', { GET: (r) => this.catalogServices(r) });
    ex('/v1/catalog/nodes', { GET: (r) => this.catalogNodes(r) });
    ex('/v1/catalog/datacenters', { GET: (r) => send(r.res, 200, JSON.stringify([this.c.node.datacenter]), this.c.agentIndex()) });
    pre('/v1/catalog/service/', { GET: (r, name) => this.catalogService(r, name) });
    pre('/v1/catalog/node/', { GET: (r, name) => this.catalogNode(r, name) });
    pre('/v1/health/service/', { GET: (r, name) => this.healthService(r, name) });
    pre('/v1/health/checks/', { GET: (r, name) => this.healthChecks(r, name) });
    pre('/v1/health/state/', { GET: (r, state) => this.healthState(r, state) });
    pre('/v1/health/node/', { GET: (r, node) => this.healthNode(r, node) });
    ex('/v1/status/leader', { GET: (r) => send(r.res, 200, JSON.stringify(`${this.c.node.address}:8300`), this.c.agentIndex()) });
    ex('/v1/status/peers', { GET: (r) => send(r.res, 200, JSON.stringify([`${this.c.node.address}:8300`]), this.c.agentIndex()) });
  }


  async catalogServices(r: Req): Promise<void> {
    await this.c.allow(r, 'service', '', 'read');
    const block = parseBlocking(r.q);
    const metaOk = this.c.nodeMetaMatches(r);
    const filter = this.c.filterOf(r);
    const out = await this.c.block(r, block, ['catalog'], [], async () => {
      const { records, maxMod } = await this.c.records(SERVICES_ROOT);
      const services = new Map<string, Set<string>>();
      if (metaOk) {
        for (const rec of records) {
          if (filter && !filter(catalogServiceJson(rec, this.c.node))) continue;
          let set = services.get(rec.instance.service);
          if (!set) services.set(rec.instance.service, (set = new Set()));
          for (const t of serviceTags(rec)) set.add(t);
        }
      }
      const body: Record<string, string[]> = {};
      for (const [name, tags] of [...services].sort(([a], [b]) => (a < b ? -1 : 1))) body[name] = [...tags].sort();
      return { index: Math.max(this.c.hub.catalogIndex(), maxMod), body: JSON.stringify(body) };
    });
    send(r.res, 200, out.body, out.index);
  }

  async catalogService(r: Req, rawName: string): Promise<void> {
    const name = decodeSegment(rawName, 'service name');
    await this.c.allow(r, 'service', name, 'read');
    const block = parseBlocking(r.q);
    const tags = r.q.all('tag');
    const metaOk = this.c.nodeMetaMatches(r);
    const filter = this.c.filterOf(r);
    const out = await this.c.block(r, block, [`svc:${name}`], [], async () => {
      const { records, maxMod } = validName(name) ? await this.c.records(`${SERVICES_ROOT}${name}/`) : { records: [], maxMod: 0 };
      const list = [];
      if (metaOk) {
        for (const rec of records) {
          if (!hasTags(rec, tags)) continue;
          const j = catalogServiceJson(rec, this.c.node);
          if (!filter || filter(j)) list.push(j);
        }
      }
      return { index: Math.max(this.c.hub.serviceIndex(name), maxMod), body: JSON.stringify(list) };
    });
    send(r.res, 200, out.body, out.index);
  }

  async catalogNodes(r: Req): Promise<void> {
    await this.c.allow(r, 'node', '', 'read');
    const block = parseBlocking(r.q);
    const metaOk = this.c.nodeMetaMatches(r);
    const filter = this.c.filterOf(r);
    const out = await this.c.block(r, block, ['catalog'], [], async () => {
      const n = nodeJson(this.c.node);
      const list = metaOk && (!filter || filter(n)) ? [n] : [];
      return { index: this.c.hub.catalogIndex(), body: JSON.stringify(list) };
    });
    send(r.res, 200, out.body, out.index);
  }

  async catalogNode(r: Req, rawNode: string): Promise<void> {
    const node = decodeSegment(rawNode, 'node name');
    await this.c.allow(r, 'node', node, 'read');
    const block = parseBlocking(r.q);
    const filter = this.c.filterOf(r);
    const out = await this.c.block(r, block, ['catalog'], [], async () => {
      if (node !== this.c.node.name) return { index: this.c.hub.catalogIndex(), body: 'null' };
      const { records, maxMod } = await this.c.records(SERVICES_ROOT);
      const services: Record<string, unknown> = {};
      for (const rec of records) {
        const j = agentServiceJson(rec, this.c.node);
        if (!filter || filter(j)) services[rec.instance.id] = j;
      }
      return { index: Math.max(this.c.hub.catalogIndex(), maxMod), body: JSON.stringify({ Node: nodeJson(this.c.node), Services: services }) };
    });
    send(r.res, 200, out.body, out.index);
  }


  async healthService(r: Req, rawName: string): Promise<void> {
    const name = decodeSegment(rawName, 'service name');
    await this.c.allow(r, 'service', name, 'read');
    const block = parseBlocking(r.q);
    const passing = r.q.flag('passing');
    const tags = r.q.all('tag');
    const metaOk = this.c.nodeMetaMatches(r);
    const filter = this.c.filterOf(r);
    const out = await this.c.block(r, block, [`svc:${name}`, 'nodechecks'], [], async () => {
      const { records, maxMod } = validName(name) ? await this.c.records(`${SERVICES_ROOT}${name}/`) : { records: [], maxMod: 0 };
      const nc = await this.c.nodeChecks();
      const entries: string[] = [];
      if (metaOk) {
        const nodeStr = nodeJson(this.c.node);
        for (const rec of records) {
          if (!hasTags(rec, tags)) continue;
          const checks = [...nc.checks, ...serviceChecksJson(rec, this.c.checker, this.c.node)];
          if (passing && !allPassing(checks)) continue;
          const entry = { Node: nodeStr, Service: agentServiceJson(rec, this.c.node), Checks: checks };
          if (filter && !filter(entry)) continue;
          entries.push(JSON.stringify(entry));
        }
      }
      return { index: Math.max(this.c.hub.serviceIndex(name), maxMod, nc.index), body: `[${entries.join(',')}]` };
    });
    send(r.res, 200, out.body, out.index);
  }

  async healthChecks(r: Req, rawName: string): Promise<void> {
    const name = decodeSegment(rawName, 'service name');
    await this.c.allow(r, 'service', name, 'read');
    const block = parseBlocking(r.q);
    const filter = this.c.filterOf(r);
    const out = await this.c.block(r, block, [`svc:${name}`], [], async () => {
      const { records, maxMod } = validName(name) ? await this.c.records(`${SERVICES_ROOT}${name}/`) : { records: [], maxMod: 0 };
      const list = records.flatMap((rec) => serviceChecksJson(rec, this.c.checker, this.c.node)).filter((c) => !filter || filter(c));
      return { index: Math.max(this.c.hub.serviceIndex(name), maxMod), body: JSON.stringify(list) };
    });
    send(r.res, 200, out.body, out.index);
  }

  async healthState(r: Req, rawState: string): Promise<void> {
    const state = decodeSegment(rawState, 'state');
    if (state !== 'any' && !isHealthStatus(state)) {
      throw new InvalidArgumentError(`invalid state ${JSON.stringify(state.slice(0, 40))}: expected any, passing, warning or critical`, { details: { field: 'state' } });
    }
    await this.c.allow(r, 'service', '', 'read');
    const block = parseBlocking(r.q);
    const filter = this.c.filterOf(r);
    const out = await this.c.block(r, block, ['catalog', 'nodechecks'], [], async () => {
      const { records, maxMod } = await this.c.records(SERVICES_ROOT);
      const nc = await this.c.nodeChecks();
      const all = [...nc.checks, ...records.flatMap((rec) => serviceChecksJson(rec, this.c.checker, this.c.node))];
      const list = all.filter((c) => (state === 'any' || c.Status === state) && (!filter || filter(c)));
      return { index: Math.max(this.c.hub.catalogIndex(), maxMod, nc.index), body: JSON.stringify(list) };
    });
    send(r.res, 200, out.body, out.index);
  }

  async healthNode(r: Req, rawNode: string): Promise<void> {
    const node = decodeSegment(rawNode, 'node name');
    await this.c.allow(r, 'node', node, 'read');
    const block = parseBlocking(r.q);
    const out = await this.c.block(r, block, ['catalog', 'nodechecks'], [], async () => {
      if (node !== this.c.node.name) return { index: this.c.hub.catalogIndex(), body: '[]' };
      const { records, maxMod } = await this.c.records(SERVICES_ROOT);
      const nc = await this.c.nodeChecks();
      const list = [...nc.checks, ...records.flatMap((rec) => serviceChecksJson(rec, this.c.checker, this.c.node))];
      return { index: Math.max(this.c.hub.catalogIndex(), maxMod, nc.index), body: JSON.stringify(list) };
    });
    send(r.res, 200, out.body, out.index);
  }
}

/** Names roster cannot store have no instances: Consul answers 200 [] for an unknown service. */
function validName(name: string): boolean {
  try {
    validateServiceName(name);
    return true;
  } catch {
    return false;
  }
}

function hasTags(rec: ServiceRecord, tags: readonly string[]): boolean {
  if (tags.length === 0) return true;
  const have = serviceTags(rec);
  return tags.every((t) => have.includes(t));
}
