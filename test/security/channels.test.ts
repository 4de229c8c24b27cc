/**
 * Session channels (server/channels.ts) under auth: a channel belongs to the token that opened it.
 * Another token cannot renew through it, grant on it, take it over by resuming it, or bind another
 * token's session to its own channel (and so cannot make that session expire when it drops its
 * connection). The owner's bound session still ends when the owner's connection drops.
 */
import { request as httpRequest, type ClientRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/backend.js';
import { Registrar } from '../../src/registry/registrar.js';
import { eventually } from '../helpers/watch.js';
import { secureWorld, type World } from './helpers.js';

interface OpenChannel {
  id: string;
  resumed: boolean;
  close(): void;
}

/** GET /api/v1/channels as `token`; resolves with its opening event (the stream stays open). */
function openChannel(base: string, token: string | undefined, resume?: string): Promise<OpenChannel | { status: number }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req: ClientRequest = httpRequest({
      host: u.hostname,
      port: Number(u.port),
      path: `/api/v1/channels${resume ? `?resume=${resume}` : ''}`,
      headers: token ? { authorization: `Bearer ${token}` } : {},
      agent: false,
    });
    req.on('response', (res) => {
      if (res.statusCode !== 200) {
        res.resume();
        resolve({ status: res.statusCode ?? 0 });
        return;
      }
      let buf = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => {
        buf += d;
        const m = /data: (.*)\n\n/.exec(buf);
        if (m) {
          const o = JSON.parse(m[1]!) as { id: string; resumed: boolean };
          resolve({ id: o.id, resumed: o.resumed, close: () => req.destroy() });
        }
      });
    });
    req.on('error', reject);
    req.end();
  });
}

function isOpen(c: OpenChannel | { status: number }): c is OpenChannel {
  return 'id' in c;
}

describe('session channels belong to their token', () => {
  let w: World;
  beforeAll(async () => {
    w = await secureWorld();
  });
  afterAll(async () => {
    await w?.close();
  });

  it('another token cannot renew through, grant on, resume or bind into a channel; the owner is unaffected', async () => {
    expect(await openChannel(w.url, undefined)).toEqual({ status: 401 });
    const own = await openChannel(w.url, w.tokens.svc);
    const theirs = await openChannel(w.url, w.svc2);
    if (!isOpen(own) || !isOpen(theirs)) throw new Error('channels did not open');
    try {
      // The owner grants a bound session on its channel.
      const g = await w.as('svc', 'POST', '/api/v1/sessions', { ttl: 30_000, channel: own.id, bound: true });
      expect(g.status).toBe(201);
      const sid = (g.json as { id: string }).id;
      expect((await w.as('svc', 'PUT', '/api/v1/keys/services/orders/ch1', { value: '{"service":"orders","address":"10.0.0.1"}', session: sid })).status).toBe(200);

      // Thieves: another instance of the same service (same policy), the writer, the admin.
      for (const thief of [w.svc2, w.tokens.writer!, w.tokens.admin!]) {
        const ka = await w.as(thief, 'POST', `/api/v1/channels/${own.id}/keepalive`, undefined, { 'x-roster-request': '1' });
        expect(ka.status).toBe(404);
        expect((await w.as(thief, 'POST', '/api/v1/sessions', { ttl: 30_000, channel: own.id, bound: true })).status).toBe(404);
        expect((await w.as(thief, 'POST', `/api/v1/channels/${own.id}/attach`, { sessions: [{ id: sid, bound: true }] })).status).toBe(404);
        expect((await w.as(thief, 'POST', `/api/v1/channels/${own.id}/detach`, { sessions: [sid] })).status).toBe(404);
      }
      // svc2 binds svc's session to its own channel: refused (it is not svc2's session).
      const steal = await w.as(w.svc2, 'POST', `/api/v1/channels/${theirs.id}/attach`, { sessions: [{ id: sid, bound: true }] });
      expect(steal.status).toBe(403);
      expect((steal.json as { error: { code: string } }).error.code).toBe('PERMISSION_DENIED');
      // Resuming svc's channel with svc2's token gives svc2 a channel of its own.
      const hijack = await openChannel(w.url, w.svc2, own.id);
      if (!isOpen(hijack)) throw new Error('svc2 could not open a channel');
      expect(hijack.resumed).toBe(false);
      expect(hijack.id).not.toBe(own.id);
      // svc2 drops both its connections: nothing of svc's expires.
      hijack.close();
      theirs.close();
      await new Promise((r) => setTimeout(r, 400)); // past the 100 ms grace
      expect(w.engine.leaseInfo(sid)).toBeDefined();
      // The owner still renews through its channel...
      const mine = await w.as('svc', 'POST', `/api/v1/channels/${own.id}/keepalive`, undefined, { 'x-roster-request': '1' });
      expect(mine.status).toBe(200);
      expect(mine.json).toEqual({ lost: [] });
      // ...and its bound session ends when its own connection drops.
      own.close();
      await eventually(() => w.engine.leaseInfo(sid) === undefined, 3000, 'bound session expired');
      expect((await w.as('reader', 'GET', '/api/v1/keys/services/orders/ch1')).status).toBe(404);
    } finally {
      own.close();
      theirs.close();
    }
  });

  it('a Registrar with a token binds its session; destroying its backend ends it within the grace', async () => {
    const owner = await RemoteBackend.open(w.url, { token: w.tokens.svc!, keepProcessAlive: false });
    const reg = new Registrar(owner, { ttl: 30_000, keepProcessAlive: false });
    try {
      await reg.register({ service: 'orders', id: 'ch2', address: '127.0.0.1', port: 9002 });
      expect(reg.session?.connectionBound).toBe(true);
      expect(w.engine.leaseInfo(reg.session!.id)).toBeDefined();
      // Destroying the backend is a crash as far as the server can tell: gone within the grace.
      const sid = reg.session!.id;
      owner.destroy();
      await eventually(() => w.engine.leaseInfo(sid) === undefined, 3000, 'bound session expired');
    } finally {
      await reg.close().catch(() => undefined);
      owner.destroy();
    }
  });
});
