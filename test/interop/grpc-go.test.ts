/**
 * grpc-go as the other party: a Go client (test/interop/go/grpcclient, grpc-go 1.33 and etcd's
 * naming resolver from Debian) with the round_robin balancer dials `etcd:///services/<svc>` and
 * calls three @grpc/grpc-js servers that a roster Registrar registered WITH metadata in the
 * naming/endpoints layout. The calls spread evenly, and a deregistration takes the server out of
 * the Go client's rotation.
 *
 * Negative control: the same client on an endpoint whose Metadata is a JSON object (what roster
 * wrote before, and what etcd's Go endpoints.Manager writes for a map) panics inside grpc-go,
 * so this test would catch roster writing that form again.
 */
import * as grpc from '@grpc/grpc-js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdBackend } from '../../src/backends/etcd/index.js';
import { Registrar } from '../../src/registry/index.js';
import { etcdEndpointsLayout } from '../../src/registry/layout.js';
import { startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { buildGo, goAvailable, LineProcess } from '../helpers/thirdparty.js';

const raw = { serialize: (b: Buffer) => b, deserialize: (b: Buffer) => b };
const ECHO: grpc.ServiceDefinition = {
  Who: { path: '/roster.interop.Echo/Who', requestStream: false, responseStream: false, requestSerialize: raw.serialize, requestDeserialize: raw.deserialize, responseSerialize: raw.serialize, responseDeserialize: raw.deserialize },
};

let etcd: EtcdServer;
let backend: EtcdBackend;
let client: string;
const servers: grpc.Server[] = [];
const procs: LineProcess[] = [];

async function echoServer(id: string): Promise<number> {
  const server = new grpc.Server();
  server.addService(ECHO, { Who: (_call: unknown, cb: grpc.sendUnaryData<Buffer>) => cb(null, Buffer.from(id)) });
  servers.push(server);
  return new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (e, port) => (e ? reject(e) : resolve(port))));
}

function goClient(target: string): LineProcess {
  const p = new LineProcess(`grpcclient ${target}`, client, ['-etcd', etcd.endpoint, '-target', target, '-interval', '2ms']);
  procs.push(p);
  return p;
}

/** Answering server ids from line `from` on. */
const answers = (p: LineProcess, from: number) => p.lines.slice(from).filter((l) => l.startsWith('ok ')).map((l) => l.slice(3));

describe.skipIf(!goAvailable())('grpc-go round_robin over etcd:/// calls roster-registered services', () => {
  beforeAll(async () => {
    [etcd, client] = await Promise.all([startEtcd(), buildGo('grpcclient')]);
    backend = await EtcdBackend.open(etcd.url('')); // no prefix: roster key services/<svc>/... is the etcd key
  }, 180_000);
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill()));
    await Promise.all(servers.map((s) => new Promise<void>((r) => s.tryShutdown(() => r()))));
    await backend?.close();
    await etcd?.stop();
  });

  it('three servers registered with metadata share the calls evenly, and a deregistered one leaves the rotation', async () => {
    const svc = `echo-${process.pid}`;
    const registrar = new Registrar(backend, { ttl: 2000, layout: etcdEndpointsLayout('services') });
    const ids = ['a', 'b', 'c'];
    const regs = [];
    for (const id of ids) {
      const port = await echoServer(id);
      regs.push(await registrar.register({ service: svc, address: '127.0.0.1', port, metadata: { version: 'v2', server: id }, weight: 2, zone: 'z1' }));
    }
    // What the Go side reads: Metadata is a string.
    const stored = await etcd.etcdctl('get', '--prefix', `services/${svc}/`, '--print-value-only');
    for (const line of stored.trim().split('\n')) expect(typeof (JSON.parse(line) as { Metadata: unknown }).Metadata).toBe('string');

    const go = goClient(`services/${svc}`);
    // Round-robin only picks READY connections: wait until every server has answered once.
    await go.waitFor(() => new Set(answers(go, 0)).size === 3, 20_000, 'answer from each of a, b, c');
    const start = go.lines.length;
    await go.waitFor(() => answers(go, start).length >= 30, 10_000, '30 more answers');
    const window = answers(go, start).slice(0, 30);
    const counts = Object.fromEntries(ids.map((id) => [id, window.filter((w) => w === id).length]));
    expect(counts).toEqual({ a: 10, b: 10, c: 10 });
    expect(go.lines.some((l) => l.startsWith('err '))).toBe(false);

    // Deregister c: the etcd watch behind grpc-go's resolver removes it from the rotation.
    const t0 = performance.now();
    await regs[2]!.deregister();
    const mark = go.lines.length;
    let lastC = -1;
    await go.waitFor(
      () => {
        const after = answers(go, mark);
        lastC = after.lastIndexOf('c');
        return after.length - (lastC + 1) >= 60;
      },
      10_000,
      '60 answers in a row without c after its deregistration',
    );
    const tail = answers(go, mark).slice(lastC + 1);
    expect(new Set(tail)).toEqual(new Set(['a', 'b']));
    console.log(`grpc-go: 30 calls over 3 servers ${JSON.stringify(counts)}; after deregistration ${lastC + 1} more call(s) reached c, then ${tail.length} went to a/b only (${Math.round(performance.now() - t0)} ms)`);
    await go.end();
    await registrar.close();
  }, 90_000);

  it('negative control: an object Metadata (the old form) panics grpc-go\'s round_robin', async () => {
    const svc = `echo-object-${process.pid}`;
    const port = await echoServer('x');
    await etcd.etcdctl('put', `services/${svc}/127.0.0.1:${port}`, JSON.stringify({ Op: 0, Addr: `127.0.0.1:${port}`, Metadata: { version: 'v2' } }));
    const go = goClient(`services/${svc}`);
    const exit = await Promise.race([go.exited, new Promise<'alive'>((r) => setTimeout(() => r('alive'), 15_000))]);
    expect(exit, `grpc-go did not crash; lines: ${go.lines.slice(-3).join(' | ')}`).not.toBe('alive');
    expect(go.stderr).toMatch(/panic: runtime error: hash of unhashable type map\[string\]interface \{\}/);
  }, 60_000);
});
