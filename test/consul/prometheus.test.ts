/**
 * Prometheus' Consul service discovery against roster server, replayed request by request.
 * Debian's Prometheus 2.42 is built without consul_sd_configs, so this test sends exactly what
 * discovery/consul/consul.go at v2.42.0 sends through the Go client (github.com/hashicorp/consul/api):
 *
 *   GET /v1/agent/self                                   (getDatacenter: Config.Datacenter)
 *   GET /v1/catalog/services?stale=&wait=120000ms        (watchServices; then &index=<LastIndex>)
 *   GET /v1/health/service/<name>?stale=&wait=120000ms   (per service; then &index=<LastIndex>)
 *
 * (Go's url.Values encodes keys sorted; QueryOptions.AllowStale sets `stale` to ''; WaitTime is
 * sent as milliseconds; WaitIndex 0 is not sent.) It then builds the targets as consul.go does
 * (Service.Address, else Node.Address, joined with Service.Port; __meta_consul_* labels; health =
 * AggregatedStatus of all checks) and checks they are right, that a change wakes the parked
 * queries at once, and that an unchanged index is what tells Prometheus "no update".
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { goAgentSelf, goCatalogServices, goList, goServiceEntry } from './go-shapes.js';
import { startConsulServer, type ConsulTestServer } from './helpers.js';

let srv: ConsulTestServer;

beforeAll(async () => {
  srv = await startConsulServer();
});
afterAll(async () => {
  console.info(`Prometheus consul SD replay called:\n  ${srv.endpoints().join('\n  ')}`);
  await srv.cleanup();
});

interface QueryMeta {
  lastIndex: bigint;
  knownLeader: boolean;
  lastContact: number;
}

/** The Go client's request: query options encoded as setQueryOptions does, meta as parseQueryMeta. */
async function goQuery(path: string, opts: { waitIndex?: bigint; waitMs?: number; allowStale?: boolean }, signal?: AbortSignal): Promise<{ body: unknown; meta: QueryMeta; status: number }> {
  const params: [string, string][] = [];
  if (opts.waitIndex && opts.waitIndex !== 0n) params.push(['index', opts.waitIndex.toString()]);
  if (opts.allowStale) params.push(['stale', '']);
  if (opts.waitMs) params.push(['wait', `${opts.waitMs}ms`]);
  params.sort(([a], [b]) => (a < b ? -1 : 1));
  const qs = params.map(([k, v]) => `${k}=${encodeURIComponent(v)}`).join('&');
  const res = await fetch(`${srv.url}${path}${qs ? `?${qs}` : ''}`, signal ? { signal } : {});
  const text = await res.text();
  const h = res.headers;
  // parseQueryMeta: X-Consul-Index parsed as uint64, X-Consul-LastContact must parse, KnownLeader "true".
  const index = h.get('x-consul-index');
  const contact = h.get('x-consul-lastcontact');
  if (index === null || !/^\d+$/.test(index)) throw new Error(`Failed to parse X-Consul-Index: ${index}`);
  if (contact === null || !/^\d+$/.test(contact)) throw new Error(`Failed to parse X-Consul-LastContact: ${contact}`);
  return { body: res.ok ? JSON.parse(text) : text, status: res.status, meta: { lastIndex: BigInt(index), knownLeader: h.get('x-consul-knownleader') === 'true', lastContact: Number(contact) } };
}

interface Target {
  __address__: string;
  [label: string]: string;
}

interface ServiceEntry {
  Node: { Node: string; Address: string; Meta: Record<string, string>; TaggedAddresses: Record<string, string> };
  Service: { ID: string; Address: string; Port: number; Tags: string[]; Meta: Record<string, string> };
  Checks: { Status: string }[];
}

/** consul.go's AggregatedStatus: maintenance > critical > warning > passing. */
function aggregatedStatus(checks: { Status: string; CheckID?: string }[]): string {
  let passing = false, warning = false, critical = false, maintenance = false;
  for (const c of checks) {
    if (c.CheckID?.startsWith('_service_maintenance:') || c.CheckID === '_node_maintenance') {
      maintenance = true;
      continue;
    }
    if (c.Status === 'passing') passing = true;
    else if (c.Status === 'warning') warning = true;
    else if (c.Status === 'critical') critical = true;
    else return '';
  }
  return maintenance ? 'maintenance' : critical ? 'critical' : warning ? 'warning' : passing ? 'passing' : 'passing';
}

function targets(entries: ServiceEntry[], name: string): Target[] {
  return entries.map((e) => {
    const host = e.Service.Address !== '' ? e.Service.Address : e.Node.Address;
    const t: Target = {
      __address__: `${host.includes(':') ? `[${host}]` : host}:${e.Service.Port}`,
      __meta_consul_address: e.Node.Address,
      __meta_consul_node: e.Node.Node,
      __meta_consul_tags: `,${e.Service.Tags.join(',')},`,
      __meta_consul_service: name,
      __meta_consul_service_address: e.Service.Address,
      __meta_consul_service_port: String(e.Service.Port),
      __meta_consul_service_id: e.Service.ID,
      __meta_consul_health: aggregatedStatus(e.Checks as { Status: string; CheckID?: string }[]),
      __meta_consul_dc: 'dc1',
    };
    for (const [k, v] of Object.entries(e.Service.Meta)) t[`__meta_consul_service_metadata_${k.replace(/[^a-zA-Z0-9_]/g, '_')}`] = v;
    for (const [k, v] of Object.entries(e.Node.Meta)) t[`__meta_consul_metadata_${k.replace(/[^a-zA-Z0-9_]/g, '_')}`] = v;
    for (const [k, v] of Object.entries(e.Node.TaggedAddresses)) t[`__meta_consul_tagged_address_${k}`] = v;
    return t;
  });
}

async function register(body: Record<string, unknown>): Promise<void> {
  const r = await fetch(`${srv.url}/v1/agent/service/register`, { method: 'PUT', body: JSON.stringify(body) });
  expect(r.status).toBe(200);
}

describe('Prometheus consul SD (v2.42.0) replay', () => {
  it('discovers services and their targets, and wakes on changes', async () => {
    await register({ Name: 'node-exporter', ID: 'ne-1', Address: '10.0.0.1', Port: 9100, Tags: ['prod', 'linux'], Meta: { rack: 'r1' } });
    await register({ Name: 'node-exporter', ID: 'ne-2', Port: 9100 }); // no Address: the node's is used
    await register({ Name: 'api', ID: 'api-1', Address: '10.0.0.5', Port: 8080, Check: { TTL: '60s', Status: 'passing' } });

    // getDatacenter
    const self = await goQuery('/v1/agent/self', {});
    goAgentSelf(self.body, 'agent/self');
    expect((self.body as { Config: { Datacenter: string } }).Config.Datacenter).toBe('dc1');

    // watchServices, first round: WaitIndex 0
    const WAIT = 120_000;
    const svcs = await goQuery('/v1/catalog/services', { allowStale: true, waitMs: WAIT });
    goCatalogServices(svcs.body, 'catalog/services');
    expect(svcs.meta.lastIndex).toBeGreaterThan(0n);
    expect(svcs.meta.knownLeader).toBe(true);
    expect(svcs.body).toEqual({ api: [], 'node-exporter': ['linux', 'prod'] });

    // watchService per service, first round
    const watch: Record<string, bigint> = {};
    const tg: Record<string, Target[]> = {};
    for (const name of Object.keys(svcs.body as object)) {
      const r = await goQuery(`/v1/health/service/${name}`, { allowStale: true, waitMs: WAIT });
      goList(goServiceEntry)(r.body, `health/service/${name}`);
      watch[name] = r.meta.lastIndex;
      tg[name] = targets(r.body as ServiceEntry[], name);
    }
    expect(tg['node-exporter']!.map((t) => t.__address__)).toEqual(['10.0.0.1:9100', '127.0.0.1:9100']);
    expect(tg['node-exporter']![0]).toMatchObject({
      __meta_consul_tags: ',prod,linux,',
      __meta_consul_service_id: 'ne-1',
      __meta_consul_node: 'roster-test',
      __meta_consul_health: 'passing',
      __meta_consul_service_metadata_rack: 'r1',
      __meta_consul_tagged_address_lan: '127.0.0.1',
    });
    expect(tg.api![0]).toMatchObject({ __address__: '10.0.0.5:8080', __meta_consul_health: 'passing' });

    // Second round: every query parks with its index. A change to node-exporter wakes only its own.
    const ac = new AbortController();
    const apiParked = goQuery('/v1/health/service/api', { allowStale: true, waitMs: WAIT, waitIndex: watch.api! }, ac.signal).then(
      () => 'woke',
      () => 'aborted',
    );
    const neParked = goQuery('/v1/health/service/node-exporter', { allowStale: true, waitMs: WAIT, waitIndex: watch['node-exporter']! });
    const catalogParked = goQuery('/v1/catalog/services', { allowStale: true, waitMs: WAIT, waitIndex: svcs.meta.lastIndex });
    const t0 = Date.now();
    await register({ Name: 'node-exporter', ID: 'ne-3', Address: '10.0.0.3', Port: 9100, Tags: ['prod'] });
    const ne = await neParked;
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(ne.meta.lastIndex).toBeGreaterThan(watch['node-exporter']!);
    expect(targets(ne.body as ServiceEntry[], 'node-exporter').map((t) => t.__address__)).toEqual(['10.0.0.1:9100', '127.0.0.1:9100', '10.0.0.3:9100']);
    // The catalog query wakes too (a registration changes the catalog's index) with the same set.
    const cat = await catalogParked;
    expect(cat.meta.lastIndex).toBeGreaterThan(svcs.meta.lastIndex);
    expect(cat.body).toEqual({ api: [], 'node-exporter': ['linux', 'prod'] });
    // api's query is still parked: it was not woken by another service's change.
    expect(await Promise.race([apiParked, new Promise((r) => setImmediate(() => r('parked')))])).toBe('parked');
    ac.abort();
    await apiParked;

    // A failing check shows in __meta_consul_health at once for a parked query.
    const apiAgain = goQuery('/v1/health/service/api', { allowStale: true, waitMs: WAIT, waitIndex: watch.api! });
    await fetch(`${srv.url}/v1/agent/check/fail/service:api-1`, { method: 'PUT' });
    const api = await apiAgain;
    expect(targets(api.body as ServiceEntry[], 'api')[0]!.__meta_consul_health).toBe('critical');

    // A removed service: catalog/services wakes without it (Prometheus then sends an empty group).
    // (The failed check changed the catalog's index too: Prometheus' next round starts from it.)
    const catIdx = (await goQuery('/v1/catalog/services', { allowStale: true, waitMs: WAIT })).meta.lastIndex;
    const gone = goQuery('/v1/catalog/services', { allowStale: true, waitMs: WAIT, waitIndex: catIdx });
    await fetch(`${srv.url}/v1/agent/service/deregister/api-1`, { method: 'PUT' });
    const after = await gone;
    expect(after.meta.lastIndex).toBeGreaterThan(catIdx);
    expect(Object.keys(after.body as object)).toEqual(['node-exporter']);
  });

  it('an unchanged service answers with the same index when the wait ends ("no update")', async () => {
    const first = await goQuery('/v1/health/service/node-exporter', { allowStale: true, waitMs: 120_000 });
    const t0 = Date.now();
    // A short wait stands in for Prometheus' 2 minutes: same rule, quicker test.
    const again = await goQuery('/v1/health/service/node-exporter', { allowStale: true, waitMs: 300, waitIndex: first.meta.lastIndex });
    expect(Date.now() - t0).toBeGreaterThanOrEqual(290);
    expect(again.meta.lastIndex).toBe(first.meta.lastIndex);
  });
});
