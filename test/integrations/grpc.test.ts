/**
 * The gRPC resolver against three real grpc-js servers on loopback ports, registered through a
 * Registrar: `roster:///<service>` spreads calls over all of them and follows (de)registrations.
 */
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Backend } from '../../src/contract/types.js';
import { MemoryBackend } from '../../src/backends/memory/index.js';
import { endpointsOf, registerRosterResolver, rosterResolverClass } from '../../src/integrations/grpc.js';
import { Discovery, Registrar } from '../../src/registry/index.js';
import { eventually } from '../helpers/watch.js';

const PROTO = `
syntax = "proto3";
package rostertest;
service Echo {
  rpc Who (WhoRequest) returns (WhoReply);
}
message WhoRequest { string from = 1; }
message WhoReply { string id = 1; }
`;

type WhoClient = grpc.Client & {
  Who(req: { from: string }, opts: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: { id: string }) => void): void;
};

let dir: string;
let Echo: grpc.ServiceClientConstructor;
let backend: Backend;
let registrar: Registrar;
let discovery: Discovery;
let unbind: () => void;
const servers: { id: string; server: grpc.Server; port: number; calls: number }[] = [];

async function startServer(id: string) {
  const entry = { id, server: new grpc.Server(), port: 0, calls: 0 };
  entry.server.addService(Echo.service, {
    Who: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<{ id: string }>) => {
      entry.calls++;
      cb(null, { id });
    },
  });
  entry.port = await new Promise<number>((resolve, reject) =>
    entry.server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );
  servers.push(entry);
  return entry;
}

function who(client: WhoClient): Promise<string> {
  return new Promise((resolve, reject) =>
    client.Who({ from: 'test' }, { deadline: Date.now() + 5000 }, (err, res) => (err ? reject(err) : resolve(res!.id))),
  );
}

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'roster-grpc-'));
  const file = join(dir, 'echo.proto');
  await writeFile(file, PROTO);
  const def = await protoLoader.load(file, { keepCase: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { rostertest: { Echo: grpc.ServiceClientConstructor } };
  Echo = pkg.rostertest.Echo;
  backend = await MemoryBackend.open(`memory://grpc-${process.pid}`);
  registrar = new Registrar(backend, { ttl: 5000 });
  discovery = new Discovery(backend);
  unbind = registerRosterResolver(discovery);
});

afterAll(async () => {
  unbind?.();
  await registrar?.close().catch(() => undefined);
  await discovery?.close();
  await Promise.all(servers.map((s) => new Promise<void>((r) => s.server.tryShutdown(() => r()))));
  await backend?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('gRPC resolver roster:///', () => {
  it('spreads calls over all three servers and follows a deregistration and a registration', async () => {
    const service = `echo-${process.pid}`;
    const [a, b, c] = await Promise.all(['a', 'b', 'c'].map((id) => startServer(id)));
    for (const s of [a, b, c]) await registrar.register({ service, id: s!.id, address: '127.0.0.1', port: s!.port, tags: ['grpc'] });
    const client = new Echo(`roster:///${service}`, grpc.credentials.createInsecure()) as unknown as WhoClient;
    try {
      // Round-robin across READY subchannels: once all three are connected, calls cycle evenly.
      await eventually(async () => {
        const ids = new Set(await Promise.all(Array.from({ length: 6 }, () => who(client))));
        return ids.size === 3;
      }, 10_000, 'calls reaching all three servers');
      const counts: Record<string, number> = {};
      for (let i = 0; i < 90; i++) {
        const id = await who(client);
        counts[id] = (counts[id] ?? 0) + 1;
      }
      expect(Object.keys(counts).sort()).toEqual(['a', 'b', 'c']);
      for (const id of ['a', 'b', 'c']) expect(counts[id]).toBe(30);

      // Deregister b: calls stop reaching it without any client action.
      const t0 = Date.now();
      await registrar.deregister('b');
      await eventually(async () => {
        const ids = await Promise.all(Array.from({ length: 6 }, () => who(client)));
        return !ids.includes('b');
      }, 5000, 'calls leaving b');
      const followMs = Date.now() - t0;
      const bCalls = b!.calls;
      const after = new Set<string>();
      for (let i = 0; i < 30; i++) after.add(await who(client));
      expect(after).toEqual(new Set(['a', 'c']));
      expect(b!.calls).toBe(bCalls);

      // A new server registered now receives calls.
      const d = await startServer('d');
      const t1 = Date.now();
      await registrar.register({ service, id: 'd', address: '127.0.0.1', port: d.port, tags: ['grpc'] });
      await eventually(async () => (await Promise.all(Array.from({ length: 6 }, () => who(client)))).includes('d'), 5000, 'calls reaching d');
      console.log(`[grpc] 90 calls split ${JSON.stringify(counts)}; deregistration followed within ${followMs} ms; new server reached within ${Date.now() - t1} ms`);
    } finally {
      client.close();
    }
  }, 30_000);

  it('an unknown service fails calls with UNAVAILABLE rather than hanging', async () => {
    const client = new Echo(`roster:///nobody-${process.pid}`, grpc.credentials.createInsecure()) as unknown as WhoClient;
    try {
      const err = await who(client).then(
        () => undefined,
        (e: grpc.ServiceError) => e,
      );
      expect(err?.code).toBe(grpc.status.UNAVAILABLE);
      expect(err?.details).toContain('nobody');
    } finally {
      client.close();
    }
  });

  it('never calls the listener synchronously; stops after destroy()', async () => {
    const service = `sync-${process.pid}`;
    await registrar.register({ service, id: 'x', address: '127.0.0.1', port: 1234 });
    await discovery.open(service);
    const R = rosterResolverClass('roster');
    const calls: unknown[] = [];
    const listener = ((endpoints: unknown) => (calls.push(endpoints), true)) as ConstructorParameters<typeof R>[1];
    const r = new R({ scheme: 'roster', authority: '', path: service }, listener, {});
    expect(calls).toHaveLength(0);
    await eventually(() => calls.length === 1, 2000, 'first result');
    expect(calls[0]).toMatchObject({ ok: true, value: [{ addresses: [{ host: '127.0.0.1', port: 1234 }] }] });
    r.updateResolution();
    expect(calls).toHaveLength(1);
    await eventually(() => calls.length === 2, 2000, 'repeated result');
    r.destroy();
    await registrar.register({ service, id: 'y', address: '127.0.0.1', port: 1235 });
    await eventually(() => discovery.cache(service).instances.length === 2, 2000, 'cache update');
    await new Promise((res) => setImmediate(res));
    expect(calls).toHaveLength(2);
    r.updateResolution(); // restarts after destroy
    await eventually(() => calls.length === 3, 2000, 'result after restart');
    expect((calls[2] as { value: unknown[] }).value).toHaveLength(2);
    r.destroy();
  });

  it('endpointsOf: skips weight 0, port-less and (while any is up) draining instances; tags and metadata ports', () => {
    const mk = (id: string, extra: object) => ({ service: 's', id, address: '10.0.0.1', metadata: {}, tags: [], weight: 1, status: 'up', ...extra }) as never;
    const list = [mk('a', { port: 1 }), mk('b', { port: 2, weight: 0 }), mk('c', {}), mk('d', { port: 4, status: 'draining' }), mk('e', { port: 5, tags: ['grpc'], metadata: { grpcPort: '9005' } })];
    expect(endpointsOf(list).map((e) => (e.addresses[0] as { port: number }).port)).toEqual([1, 5]);
    expect(endpointsOf(list, { tags: ['grpc'], portMetadataKey: 'grpcPort' }).map((e) => (e.addresses[0] as { port: number }).port)).toEqual([9005]);
    expect(endpointsOf([mk('d', { port: 4, status: 'draining' })]).map((e) => (e.addresses[0] as { port: number }).port)).toEqual([4]);
  });
});
