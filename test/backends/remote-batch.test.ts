/**
 * The remote backend's write batching (src/backends/remote/batch.ts): writes issued in one turn
 * of the event loop go out as one POST /api/v1/batch, each keeping exactly its single-request
 * outcome; a write alone goes out as its single request; a server without the endpoint gets single
 * requests; `batch: false` turns it off.
 */
import { createServer, request as httpRequest, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { isRosterError } from '../../src/core/errors.js';
import { request } from '../helpers/http.js';
import { uniquePrefix } from '../helpers/watch.js';
import { startInProcess, type InProcessServer } from '../helpers/server.js';
import { serverEngine } from '../../src/server/server.js';

/** Requests the server has answered, by route (from its own /metrics). */
async function routeCounts(url: string): Promise<Record<string, number>> {
  const text = (await request(url, 'GET', '/metrics')).text;
  const out: Record<string, number> = {};
  for (const m of text.matchAll(/^roster_http_requests_total\{route="([^"]+)",method="[^"]+",status="\d+"\} (\d+)$/gm)) {
    out[m[1]!] = (out[m[1]!] ?? 0) + Number(m[2]);
  }
  return out;
}

function delta(a: Record<string, number>, b: Record<string, number>, route: string): number {
  return (b[route] ?? 0) - (a[route] ?? 0);
}

describe('remote backend: write batching', () => {
  let srv: InProcessServer;
  let b: RemoteBackend;
  beforeAll(async () => {
    srv = await startInProcess();
    b = await RemoteBackend.open(srv.url);
  });
  afterAll(async () => {
    await b?.close();
    await srv?.cleanup();
  });

  it('puts and deletes issued together go out as one request, each with its own result', async () => {
    const p = uniquePrefix('rb');
    await b.put(`${p}taken`, 'x');
    await b.put(`${p}gone`, 'x');
    const s = await b.session({ ttl: 5000 });
    const before = await routeCounts(srv.url);
    const puts = Array.from({ length: 50 }, (_, i) => b.put(`${p}k${i}`, `v${i}`, { session: s }));
    const conflict = b.put(`${p}taken`, 'y', { ifAbsent: true });
    const del = b.delete(`${p}gone`);
    const delMissing = b.delete(`${p}missing`);
    const results = await Promise.all(puts);
    results.forEach((r, i) => expect(r.kv).toMatchObject({ key: `${p}k${i}`, value: `v${i}`, version: 1, session: s.id }));
    // Revisions follow submission order.
    for (let i = 1; i < results.length; i++) expect(results[i]!.revision).toBe(results[i - 1]!.revision + 1);
    await expect(conflict).rejects.toSatisfy((e: unknown) => isRosterError(e, 'CONFLICT'));
    expect(await del).toMatchObject({ deleted: true });
    expect(await delMissing).toMatchObject({ deleted: false });
    const after = await routeCounts(srv.url);
    expect(delta(before, after, 'batch')).toBe(1);
    expect(delta(before, after, 'key')).toBe(0);
    await s.close();
  });

  it('a write alone is a single request; batch: false sends single requests', async () => {
    const p = uniquePrefix('rb1');
    let before = await routeCounts(srv.url);
    await b.put(`${p}alone`, 'v');
    let after = await routeCounts(srv.url);
    expect(delta(before, after, 'key')).toBe(1);
    expect(delta(before, after, 'batch')).toBe(0);
    const plain = await RemoteBackend.open(srv.url, { batch: false });
    try {
      before = await routeCounts(srv.url);
      await Promise.all(Array.from({ length: 5 }, (_, i) => plain.put(`${p}k${i}`, 'v')));
      after = await routeCounts(srv.url);
      expect(delta(before, after, 'key')).toBe(5);
      expect(delta(before, after, 'batch')).toBe(0);
    } finally {
      await plain.close();
    }
    await expect(RemoteBackend.open(srv.url, { batch: 'yes' } as never)).rejects.toSatisfy((e: unknown) => isRosterError(e, 'INVALID_ARGUMENT'));
  });

  it('a delete with lastValue is one batch request even alone: one commit, the put and the delete at consecutive revisions', async () => {
    const p = uniquePrefix('rbl');
    const s = await b.session({ ttl: 5000 });
    const { kv } = await b.put(`${p}k`, 'v', { session: s });
    const w = b.watch(p)[Symbol.asyncIterator]();
    expect((await w.next()).value).toMatchObject({ type: 'put', key: `${p}k` });
    expect((await w.next()).value).toMatchObject({ type: 'synced' });
    const before = await routeCounts(srv.url);
    const fsyncs = serverEngine(srv.server).stats().fsyncs;
    const d = await b.delete(`${p}k`, { ifVersion: kv.version, lastValue: 'leaving', session: s });
    const after = await routeCounts(srv.url);
    expect(delta(before, after, 'batch')).toBe(1);
    expect(delta(before, after, 'key')).toBe(0);
    expect(serverEngine(srv.server).stats().fsyncs - fsyncs).toBe(1);
    expect((await w.next()).value).toMatchObject({ type: 'put', revision: d.revision - 1, kv: { value: 'leaving', session: s.id, version: kv.version + 1 } });
    expect((await w.next()).value).toMatchObject({ type: 'delete', key: `${p}k`, revision: d.revision });
    await w.return?.();
    // A stale version: neither the put nor the delete.
    const again = await b.put(`${p}k`, 'v2', { session: s });
    await expect(b.delete(`${p}k`, { ifVersion: again.kv.version + 1, lastValue: 'leaving', session: s })).rejects.toSatisfy((e: unknown) => isRosterError(e, 'CONFLICT'));
    expect(await b.get(`${p}k`)).toMatchObject({ value: 'v2', version: again.kv.version });
    // batch: false: the put, then the delete of the version it wrote, as single requests.
    const plain = await RemoteBackend.open(srv.url, { batch: false });
    try {
      const s2 = await plain.session({ ttl: 5000 });
      const r = await plain.put(`${p}j`, 'v', { session: s2 });
      const b0 = await routeCounts(srv.url);
      await plain.delete(`${p}j`, { ifVersion: r.kv.version, lastValue: 'leaving', session: s2 });
      const b1 = await routeCounts(srv.url);
      expect(delta(b0, b1, 'key')).toBe(2);
      expect(delta(b0, b1, 'batch')).toBe(0);
      expect(await plain.get(`${p}j`)).toBeUndefined();
    } finally {
      await plain.close();
    }
    await s.close();
  });

  it('a server whose batch endpoint does not know lastValue: the whole batch is sent again, lastValue as a put then a delete, from then on', async () => {
    // A real HTTP proxy answering as the previous release did: a batch op with a field it does not
    // know refuses the whole request (400, details.field ops[i].<field>), nothing applied.
    let refused = 0;
    const proxy = await olderServer(srv.url, (url, body) => {
      if (!url.startsWith('/api/v1/batch')) return undefined;
      const i = (JSON.parse(body.toString()) as { ops: Record<string, unknown>[] }).ops.findIndex((o) => 'lastValue' in o);
      if (i < 0) return undefined;
      refused++;
      return { status: 400, body: JSON.stringify({ error: { code: 'INVALID_ARGUMENT', message: `unknown field "lastValue" in ops[${i}]: expected op, key, ifVersion`, details: { field: `ops[${i}].lastValue` } } }) };
    });
    const old = await RemoteBackend.open(proxy.url);
    try {
      const p = uniquePrefix('rbo');
      const s = await old.session({ ttl: 5000 });
      const a = await old.put(`${p}a`, 'v', { session: s });
      const b2 = await old.put(`${p}b`, 'v', { session: s });
      // Issued together: one batch, refused whole; both are sent again and both succeed.
      const [del, put] = await Promise.all([old.delete(`${p}a`, { ifVersion: a.kv.version, lastValue: 'leaving', session: s }), old.put(`${p}c`, 'v')]);
      expect(del).toMatchObject({ deleted: true });
      expect(put.kv.key).toBe(`${p}c`);
      expect(refused).toBe(1);
      expect(await b.get(`${p}a`)).toBeUndefined();
      // From then on, lastValue goes as a put then a delete: not refused again.
      await old.delete(`${p}b`, { ifVersion: b2.kv.version, lastValue: 'leaving', session: s });
      expect(refused).toBe(1);
      expect(await b.get(`${p}b`)).toBeUndefined();
      await s.close();
    } finally {
      await old.close();
      await proxy.close();
    }
  });

  it('a lost session fails only its writes and marks the session lost; an aborted write is not sent', async () => {
    const p = uniquePrefix('rb2');
    const s = await b.session({ ttl: 5000 });
    await request(srv.url, 'DELETE', `/api/v1/sessions/${s.id}`, { headers: { 'x-roster-request': '1' } }); // revoked behind the client's back
    const ac = new AbortController();
    const bound = b.put(`${p}bound`, 'v', { session: s });
    const free = b.put(`${p}free`, 'v');
    const aborted = b.put(`${p}aborted`, 'v', { signal: ac.signal });
    const abortedOutcome = aborted.then(
      () => 'resolved',
      (e: unknown) => e,
    );
    ac.abort(new Error('changed my mind'));
    await expect(bound).rejects.toSatisfy((e: unknown) => isRosterError(e, 'SESSION_LOST'));
    expect((await free).kv.key).toBe(`${p}free`);
    expect(await abortedOutcome).toMatchObject({ message: 'changed my mind' });
    expect(s.lost).toBe(true);
    expect(await b.get(`${p}aborted`)).toBeUndefined();
  });

  it('a server without the batch endpoint gets single requests, from the first batch on', async () => {
    // A real HTTP proxy in front of the server that answers the batch endpoint as an older server would.
    let batchTries = 0;
    const proxy = await olderServer(srv.url, (url) => {
      if (!url.startsWith('/api/v1/batch')) return undefined;
      batchTries++;
      return { status: 404, body: '{"error":{"code":"NOT_FOUND","message":"no such endpoint: POST \\"/api/v1/batch\\""}}' };
    });
    const old = await RemoteBackend.open(proxy.url);
    try {
      const p = uniquePrefix('rb3');
      const first = await Promise.all(Array.from({ length: 10 }, (_, i) => old.put(`${p}a${i}`, 'v')));
      expect(first.map((r) => r.kv.key)).toEqual(Array.from({ length: 10 }, (_, i) => `${p}a${i}`));
      expect(batchTries).toBe(1);
      await Promise.all(Array.from({ length: 10 }, (_, i) => old.put(`${p}b${i}`, 'v')));
      expect(batchTries).toBe(1);
      expect((await b.list(p)).items).toHaveLength(20);
      // A delete with lastValue, which only the batch protocol carries: a put, then the delete.
      const s = await old.session({ ttl: 5000 });
      const r = await old.put(`${p}c`, 'v', { session: s });
      await old.delete(`${p}c`, { ifVersion: r.kv.version, lastValue: 'leaving', session: s });
      expect(batchTries).toBe(1);
      expect(await b.get(`${p}c`)).toBeUndefined();
      await s.close();
    } finally {
      await old.close();
      await proxy.close();
    }
  });
});

/**
 * A real HTTP proxy in front of `target` that answers as an older server would: `answer` sees each
 * request's path and whole body and returns the reply to give instead (JSON), or undefined to
 * forward the request unchanged.
 */
async function olderServer(target: string, answer: (url: string, body: Buffer) => { status: number; body: string } | undefined): Promise<{ url: string; close: () => Promise<void> }> {
  const proxy: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks);
      const own = answer(req.url ?? '', body);
      if (own) {
        res.writeHead(own.status, { 'content-type': 'application/json' });
        res.end(own.body);
        return;
      }
      const u = new URL(target);
      const up = httpRequest({ host: u.hostname, port: u.port, method: req.method, path: req.url, headers: req.headers }, (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      });
      up.on('error', () => res.destroy());
      up.end(body);
    });
  });
  await new Promise<void>((resolve) => proxy.listen(0, '127.0.0.1', () => resolve()));
  return { url: `http://127.0.0.1:${(proxy.address() as { port: number }).port}`, close: () => new Promise<void>((resolve) => proxy.close(() => resolve())) };
}
