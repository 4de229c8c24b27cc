/**
 * POST /api/v1/batch (docs/protocol.md): independent puts and deletes in one request and one group
 * commit; each op gets its own result or error; a malformed op rejects the whole request before
 * anything is applied.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { request } from '../helpers/http.js';
import { Reader, uniquePrefix } from '../helpers/watch.js';
import { startInProcess, type InProcessServer } from '../helpers/server.js';

const J = { 'content-type': 'application/json' };

describe('POST /api/v1/batch', () => {
  let srv: InProcessServer;
  beforeAll(async () => {
    srv = await startInProcess();
  });
  afterAll(async () => {
    await srv?.cleanup();
  });
  const batch = (ops: unknown) => request(srv.url, 'POST', '/api/v1/batch', { headers: J, body: JSON.stringify({ ops }) });

  it('applies ops in order with per-op results, and watchers see every change in order', async () => {
    const p = uniquePrefix('batch');
    const client = await RemoteBackend.open(srv.url, { batch: false });
    try {
      const s = await client.session({ ttl: 5000 });
      await client.put(`${p}taken`, 'x');
      const w = new Reader(client.watch(p));
      await w.until((ev) => ev.type === 'synced');
      const r = await batch([
        { op: 'put', key: `${p}a`, value: 'A', session: s.id },
        { op: 'put', key: `${p}taken`, value: 'y', ifAbsent: true },
        { op: 'put', key: `${p}b`, value: 'B', session: 'nosuchsession' },
        { op: 'delete', key: `${p}taken`, ifVersion: 1 },
        { op: 'delete', key: `${p}never` },
        { op: 'put', key: `${p}a`, value: 'A2', ifVersion: 1, session: s.id },
      ]);
      expect(r.status).toBe(200);
      const body = r.json as { revision: number; results: Record<string, unknown>[] };
      expect(body.results).toHaveLength(6);
      const [a, taken, lost, del, never, a2] = body.results;
      expect(a).toMatchObject({ kv: { key: `${p}a`, value: 'A', version: 1, session: s.id } });
      expect(taken).toMatchObject({ error: { code: 'CONFLICT', details: { version: 1 } } });
      expect(lost).toMatchObject({ error: { code: 'SESSION_LOST' } });
      expect(del).toMatchObject({ deleted: true });
      expect(never).toEqual({ revision: body.revision, deleted: false });
      expect(a2).toMatchObject({ kv: { value: 'A2', version: 2 } });
      expect(body.revision).toBe((a2 as { revision: number }).revision);
      const evs = await w.take(3);
      expect(evs.map((ev) => `${ev.type}:${'key' in ev ? ev.key.slice(p.length) : ''}`)).toEqual(['put:a', 'delete:taken', 'put:a']);
      expect((await client.get(`${p}b`))).toBeUndefined();
    } finally {
      await client.close();
    }
  });

  it('a malformed op rejects the whole request and applies nothing', async () => {
    const p = uniquePrefix('batchbad');
    const cases: [unknown, string, string | undefined][] = [
      [[{ op: 'put', key: `${p}ok`, value: '1' }, { op: 'put', key: `${p}x`, value: '1', sesion: 'typo' }], 'unknown field', 'ops[1].sesion'],
      [[{ op: 'put', key: `${p}ok`, value: '1' }, { op: 'put', key: `${p}a//b`, value: '1' }], 'invalid ops[1].key', 'ops[1].key'],
      [[{ op: 'put', key: `${p}ok`, value: '1' }, { op: 'upsert', key: `${p}x` }], 'expected "put" or "delete"', 'ops[1].op'],
      [[{ op: 'put', key: `${p}ok`, value: 1 }], 'invalid value', 'value'],
      [[{ op: 'delete', key: `${p}ok`, ifVersion: -1 }], 'ifVersion', 'ops[0].ifVersion'],
      [[{ op: 'put', key: `${p}ok`, value: '1', ifAbsent: 'yes' }], 'ifAbsent', 'ops[0].ifAbsent'],
      [[{ op: 'put', key: `${p}ok`, value: '1' }, { op: 'delete', key: `${p}ok`, ifVersion: 1, lastValue: 'bye' }], 'needs ifVersion and session', 'ops[1].lastValue'],
      [[{ op: 'delete', key: `${p}ok`, lastValue: 'bye', session: 'aaaaaaaaaaaaaaaa' }], 'needs ifVersion and session', 'ops[0].lastValue'],
      [[{ op: 'delete', key: `${p}ok`, ifVersion: 1, lastValue: 7, session: 'aaaaaaaaaaaaaaaa' }], 'invalid ops[0].lastValue', 'ops[0].lastValue'],
      [[{ op: 'delete', key: `${p}ok`, ifVersion: 1, lastValue: 'x'.repeat(1024 * 1024 + 1), session: 'aaaaaaaaaaaaaaaa' }], 'lastValue too large', 'ops[0].lastValue'],
      [[{ op: 'delete', key: `${p}ok`, session: 'aaaaaaaaaaaaaaaa' }], 'a session only with lastValue', 'ops[0].session'],
      [[{ op: 'delete', key: `${p}ok`, ifVersion: 1, lastValue: 'bye', session: 'not a session' }], 'invalid ops[0].session', 'ops[0].session'],
      [[], 'expected an array of 1-1000 operations', 'ops'],
      ['not-an-array', 'expected an array', 'ops'],
      [Array.from({ length: 1001 }, (_, i) => ({ op: 'delete', key: `${p}k${i}` })), '1-1000', 'ops'],
    ];
    for (const [ops, message, field] of cases) {
      const r = await batch(ops);
      expect(r.status, JSON.stringify(ops).slice(0, 80)).toBe(400);
      const err = (r.json as { error: { code: string; message: string; details?: { field?: string } } }).error;
      expect(err.code).toBe('INVALID_ARGUMENT');
      expect(err.message).toContain(message);
      expect(err.details?.field).toBe(field);
    }
    expect((await request(srv.url, 'GET', `/api/v1/keys?prefix=${encodeURIComponent(p)}`)).json).toMatchObject({ items: [] });
    const extra = await request(srv.url, 'POST', '/api/v1/batch', { headers: J, body: '{"ops":[{"op":"delete","key":"a"}],"atomic":true}' });
    expect(extra.status).toBe(400);
    expect((await request(srv.url, 'GET', '/api/v1/batch')).status).toBe(405);
  });
});
