import { createServer as createHttpServer } from 'node:http';
import { createServer as createNetServer, type AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { isRosterError } from '../../src/core/errors.js';
import { conformance } from '../../src/testing/conformance.js';
import { ServerProcess, startInProcess } from '../helpers/server.js';
import { eventually, Reader } from '../helpers/watch.js';

describe('http:// (roster server) conformance', () => {
  let proc: ServerProcess;
  beforeAll(async () => {
    // A child process, so `restart` can really SIGKILL it.
    proc = await ServerProcess.start();
  });
  afterAll(async () => {
    await proc?.cleanup();
  });
  conformance({ describe, it, expect, beforeAll, afterAll }, {
    open: () => RemoteBackend.open(proc.url, { reconnectBaseMs: 50, reconnectCapMs: 500 }),
    ttl: 1000,
    restart: () => proc.restart(),
    compact: async () => {
      const res = await fetch(`${proc.url}/api/v1/admin/compact`, { method: 'POST', headers: { 'x-roster-request': '1' } });
      if (res.status !== 200) throw new Error(`compact failed: HTTP ${res.status} ${await res.text()}`);
    },
  });
});

describe('http:// client specifics', () => {
  const freePort = async (): Promise<number> => {
    const s = createNetServer();
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    const port = (s.address() as AddressInfo).port;
    await new Promise<void>((r) => s.close(() => r()));
    return port;
  };

  it('connection failures are UNAVAILABLE with the cause kept', async () => {
    const b = await RemoteBackend.open(`http://127.0.0.1:${await freePort()}`);
    try {
      for (const call of [() => b.get('a'), () => b.put('a', 'v'), () => b.list(''), () => b.session({ ttl: 1000 })]) {
        const e = await call().then(
          () => undefined,
          (err: unknown) => err,
        );
        expect(isRosterError(e, 'UNAVAILABLE'), String(e)).toBe(true);
        expect((e as Error).cause).toBeDefined();
      }
    } finally {
      await b.close();
    }
  });

  it('a session the server no longer knows is lost (SESSION_LOST) at the next keepalive', async () => {
    const srv = await startInProcess();
    const b = await RemoteBackend.open(srv.url);
    try {
      const s = await b.session({ ttl: 900 });
      await b.put('lost/k', 'v', { session: s });
      const res = await fetch(`${srv.url}/api/v1/sessions/${s.id}`, { method: 'DELETE', headers: { 'x-roster-request': '1' } });
      expect(res.status).toBe(204);
      await eventually(() => s.signal.aborted, 3000, 'session signal');
      expect(s.lost).toBe(true);
      expect(isRosterError(s.signal.reason, 'SESSION_LOST')).toBe(true);
      await expect(b.put('lost/k2', 'v', { session: s })).rejects.toMatchObject({ code: 'SESSION_LOST' });
    } finally {
      await b.close();
      await srv.cleanup();
    }
  });

  it('a server unreachable for a whole TTL loses the session', async () => {
    const srv = await startInProcess();
    const b = await RemoteBackend.open(srv.url);
    try {
      const s = await b.session({ ttl: 600 });
      const t0 = Date.now();
      srv.server.destroy();
      await eventually(() => s.signal.aborted, 5000, 'session loss');
      expect(Date.now() - t0).toBeLessThan(600 + 1500);
      expect(s.lost).toBe(true);
      expect(isRosterError(s.signal.reason, 'SESSION_LOST')).toBe(true);
    } finally {
      b.destroy();
      await srv.cleanup();
    }
  });

  it('a watch the server rejects (4xx) ends by throwing that error', async () => {
    const srv = await startInProcess();
    const b = await RemoteBackend.open(`${srv.url}/not-roster`);
    try {
      const w = new Reader(b.watch('x/'));
      await expect(w.next(5000)).rejects.toMatchObject({ code: 'NOT_FOUND' });
    } finally {
      await b.close();
      await srv.cleanup();
    }
  });

  it('a silent stream (no heartbeats) is detected and resumed from the last revision', async () => {
    // A fake server: headers promising 40 ms heartbeats, a snapshot at revision 7, then silence.
    const paths: string[] = [];
    const fake = createHttpServer((req, res) => {
      paths.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'text/event-stream', 'roster-heartbeat-ms': '40' });
      if (paths.length === 1) res.write('id: 7\nevent: snapshot\ndata: {"revision":7,"items":[]}\n\nid: 7\nevent: synced\ndata: {"revision":7}\n\n');
      else res.write('id: 8\nevent: put\ndata: {"type":"put","key":"s/a","revision":8,"kv":{"key":"s/a","value":"1","createRevision":8,"modRevision":8,"version":1}}\n\n');
    });
    await new Promise<void>((r) => fake.listen(0, '127.0.0.1', () => r()));
    const b = await RemoteBackend.open(`http://127.0.0.1:${(fake.address() as AddressInfo).port}`, { reconnectBaseMs: 10, reconnectCapMs: 50 });
    try {
      const w = new Reader(b.watch('s/'));
      expect(await w.next()).toEqual({ type: 'synced', revision: 7 });
      expect(await w.next(5000)).toMatchObject({ type: 'put', key: 's/a', revision: 8 });
      expect(paths[0]).toBe('/api/v1/watch?prefix=s%2F');
      expect(paths[1]).toBe('/api/v1/watch?prefix=s%2F&fromRevision=7');
      await w.return();
    } finally {
      b.destroy();
      fake.closeAllConnections();
      await new Promise<void>((r) => fake.close(() => r()));
    }
  });
});
