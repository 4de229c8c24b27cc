/**
 * Watch fan-out (src/server/sse.ts): each event is encoded once and the same bytes are written to
 * every live stream that wants it, straight to its socket. Whatever the mix of prefixes, of streams
 * opened before, during and after the writes (snapshot or resumed by revision), every stream must
 * get exactly the events under its prefix after its starting revision, in order: none lost, none
 * twice, none of another prefix. The same through the remote backend with many watchers in one
 * process (they share the decoded frame: src/backends/remote/sse.ts, watch.ts).
 */
import { connect, Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import type { WatchEvent } from '../../src/core/kv.js';
import { request } from '../helpers/http.js';
import { openSse, type SseClient } from '../helpers/sse.js';
import { Reader, uniquePrefix } from '../helpers/watch.js';
import { startInProcess, type InProcessServer } from '../helpers/server.js';

const J = { 'content-type': 'application/json' };
const CSRF = { headers: { 'x-roster-request': '1' } };

interface Op {
  type: 'put' | 'delete';
  key: string;
  revision: number;
}

describe('watch fan-out: one encoding, many streams', () => {
  let srv: InProcessServer;
  beforeAll(async () => {
    srv = await startInProcess({ heartbeatMs: 50 });
  });
  afterAll(async () => {
    await srv?.cleanup();
  });

  /** `n` writes over a few sub-prefixes of `p`, 8 at a time (so they interleave), puts and deletes. */
  async function writes(p: string, n: number, from = 0): Promise<Op[]> {
    const ops: Op[] = [];
    const subs = ['a/', 'b/', 'ab/', 'c'];
    for (let i = from; i < from + n; i += 8) {
      const batch = [];
      for (let j = i; j < Math.min(from + n, i + 8); j++) {
        const key = `${p}${subs[j % subs.length]}k${j % 13}`;
        const del = j % 5 === 4;
        batch.push(
          (del
            ? request(srv.url, 'DELETE', `/api/v1/keys/${key}`, CSRF)
            : request(srv.url, 'PUT', `/api/v1/keys/${key}`, { headers: J, body: JSON.stringify({ value: `v${j}` }) })
          ).then((r) => {
            expect(r.status).toBe(200);
            const rev = (r.json as { revision: number }).revision;
            // A delete of a missing key changes nothing: no event (its revision is the current one).
            if (!del || (r.json as { deleted: boolean }).deleted) ops.push({ type: del ? 'delete' : 'put', key, revision: rev });
          }),
        );
      }
      await Promise.all(batch);
    }
    return ops;
  }

  /** Read a raw stream's events up to revision `upTo`: [type, key, revision] plus where it started. */
  async function drain(s: SseClient, upTo: number): Promise<{ start: number; got: [string, string, number][] }> {
    let start = -1;
    const got: [string, string, number][] = [];
    let rev = -1;
    while (rev < upTo) {
      const f = await s.frames.next(10_000);
      const d = f.data as { revision: number; type?: string; key?: string };
      rev = d.revision;
      expect(f.id).toBe(String(d.revision));
      if (f.event === 'snapshot') start = d.revision;
      else if (f.event === 'put' || f.event === 'delete') {
        expect(d.type).toBe(f.event);
        got.push([f.event, d.key!, d.revision]);
      }
    }
    return { start, got };
  }

  const want = (ops: Op[], prefix: string, after: number): [string, string, number][] =>
    ops
      .filter((o) => o.key.startsWith(prefix) && o.revision > after)
      .sort((x, y) => x.revision - y.revision)
      .map((o) => [o.type, o.key, o.revision]);

  it('raw SSE streams with different prefixes, opened before, during and resumed: exactly their events', async () => {
    const p = uniquePrefix('fan');
    const r0 = ((await request(srv.url, 'PUT', `/api/v1/keys/${p}seed`, { headers: J, body: '{"value":"0"}' })).json as { revision: number }).revision;
    const prefixes = [p, `${p}a/`, `${p}b/`, `${p}a`, `${p}c`, `${p}zzz/`];
    // Before: several streams per prefix (the same frame written to many sockets), one resumed.
    const before = prefixes.flatMap((q) => [q, q, q]).map((q) => openSse(srv.url, `/api/v1/watch?prefix=${encodeURIComponent(q)}`));
    const resumed = prefixes.map((q) => openSse(srv.url, `/api/v1/watch?prefix=${encodeURIComponent(q)}&fromRevision=${r0}`));
    const early = await Promise.all([...before, ...resumed]);
    // During: streams that open while writes go on (their opening races live events).
    const w1 = writes(p, 120);
    const during = await Promise.all(prefixes.map((q) => openSse(srv.url, `/api/v1/watch?prefix=${encodeURIComponent(q)}`)));
    const ops = [...(await w1), ...(await writes(p, 120, 120))];
    // A fence so every stream has a frame at or after `last` to stop at, whatever its prefix.
    const fence: Op[] = [];
    for (const q of prefixes) {
      const r = await request(srv.url, 'PUT', `/api/v1/keys/${q}~fence`, { headers: J, body: '{"value":"f"}' });
      fence.push({ type: 'put', key: `${q}~fence`, revision: (r.json as { revision: number }).revision });
    }
    const all = [...ops, ...fence];
    const streams: [SseClient, string, boolean][] = [
      ...early.slice(0, before.length).map((s, i): [SseClient, string, boolean] => [s, prefixes[Math.floor(i / 3)]!, false]),
      ...early.slice(before.length).map((s, i): [SseClient, string, boolean] => [s, prefixes[i]!, true]),
      ...during.map((s, i): [SseClient, string, boolean] => [s, prefixes[i]!, false]),
    ];
    for (const [s, q, isResumed] of streams) {
      const upTo = fence.find((f) => f.key === `${q}~fence`)!.revision;
      const { start, got } = await drain(s, upTo);
      const after = isResumed ? r0 : start;
      expect(after, `stream on ${q} has a starting revision`).toBeGreaterThanOrEqual(r0);
      expect(got, `stream on ${q} from ${after}`).toEqual(want(all, q, after).filter((e) => e[2] <= upTo));
      s.close();
    }
    // Every stream that was open before the writes saw each of its writes: the non-empty ones did.
    expect(want(all, `${p}a/`, r0).length).toBeGreaterThan(50);
  });

  it('40 remote-backend watchers in one process, on three prefixes: every event once, shared and frozen', async () => {
    const p = uniquePrefix('fanb');
    const b = await RemoteBackend.open(srv.url);
    const backends = await Promise.all(Array.from({ length: 40 }, () => RemoteBackend.open(srv.url)));
    try {
      const prefixes = [p, `${p}a/`, `${p}b/`];
      const watchers = backends.map((x, i) => ({ prefix: prefixes[i % 3]!, r: new Reader<WatchEvent>(x.watch(prefixes[i % 3]!)) }));
      const starts: number[] = [];
      for (const w of watchers) {
        const ev = await w.r.until((e) => e.type === 'synced', 10_000, 'synced');
        starts.push(ev.at(-1)!.revision);
      }
      const ops: Op[] = [];
      for (let i = 0; i < 150; i++) {
        const key = `${p}${i % 3 === 0 ? 'a/' : i % 3 === 1 ? 'b/' : 'c/'}k${i % 11}`;
        if (i % 7 === 6) {
          const r = await b.delete(key);
          if (r.deleted) ops.push({ type: 'delete', key, revision: r.revision });
        } else {
          ops.push({ type: 'put', key, revision: (await b.put(key, `v${i}`)).revision });
        }
      }
      const fence = (await b.put(`${p}a/b/~fence`, 'f')).revision;
      ops.push({ type: 'put', key: `${p}a/b/~fence`, revision: fence });
      const byRev = new Map<number, WatchEvent>();
      for (const [i, w] of watchers.entries()) {
        const expected = want(ops, w.prefix, starts[i]!);
        const got: [string, string, number][] = [];
        while (got.length < expected.length) {
          const ev = await w.r.next(10_000);
          if (ev.type !== 'put' && ev.type !== 'delete') continue;
          got.push([ev.type, ev.key, ev.revision]);
          expect(Object.isFrozen(ev)).toBe(true);
          const seen = byRev.get(ev.revision);
          if (seen) expect(seen).toEqual(ev);
          else byRev.set(ev.revision, ev);
        }
        expect(got, `watcher ${i} on ${w.prefix}`).toEqual(expected);
      }
      // Nothing more arrives (no duplicate after the last expected event) before another write.
      const extra = await b.put(`${p}a/b/~end`, 'e');
      for (const w of watchers.filter((x) => x.prefix !== `${p}b/`)) {
        const ev = await w.r.next(10_000);
        expect(ev).toMatchObject({ type: 'put', key: `${p}a/b/~end`, revision: extra.revision });
      }
      for (const w of watchers) await w.r.return();
    } finally {
      for (const x of backends) x.destroy();
      b.destroy();
    }
  });

  it('the frames of one published batch reach a stream in one socket write, after every event of it is encoded', async () => {
    const p = uniquePrefix('fanw');
    const sse = await openSse(srv.url, `/api/v1/watch?prefix=${encodeURIComponent(p)}`);
    await sse.frames.until((f) => f.event === 'synced', 5000, 'synced');
    // The server's end of this stream is the socket whose peer is our local port: record what each
    // write to it carries (a heartbeat is not a frame: it has no "data:" line).
    const proto = Socket.prototype as unknown as Record<'_write' | '_writev', (...a: unknown[]) => unknown>;
    const orig = { _write: proto._write, _writev: proto._writev };
    const perWrite: number[] = [];
    const frames = (b: unknown) => (String(b).match(/^data: /gm) ?? []).length;
    const ports = new Set(sse.localPorts());
    proto._write = function (this: Socket, chunk: unknown, ...rest: unknown[]) {
      if (ports.has(this.remotePort!) && frames(chunk) > 0) perWrite.push(frames(chunk));
      return orig._write.call(this, chunk, ...rest);
    };
    proto._writev = function (this: Socket, chunks: unknown, ...rest: unknown[]) {
      if (ports.has(this.remotePort!)) {
        const n = (chunks as { chunk: unknown }[]).reduce((a, c) => a + frames(c.chunk), 0);
        if (n > 0) perWrite.push(n);
      }
      return orig._writev.call(this, chunks, ...rest);
    };
    try {
      const r = await request(srv.url, 'POST', '/api/v1/batch', {
        headers: J,
        body: JSON.stringify({ ops: [{ op: 'put', key: `${p}a`, value: '1' }, { op: 'put', key: `${p}b`, value: '2' }, { op: 'delete', key: `${p}a` }] }),
      });
      expect(r.status).toBe(200);
      const got = await sse.frames.until((f) => f.event === 'delete', 5000, 'the batch');
      expect(got.map((f) => f.event)).toEqual(['put', 'put', 'delete']);
      expect(perWrite).toEqual([3]);
    } finally {
      Object.assign(proto, orig);
      sse.close();
    }
  });
});

describe('a watch client that stops reading', () => {
  it('is cut once the server holds more than maxStreamBuffer for it (counted), and the others go on', async () => {
    const srv = await startInProcess({ maxStreamBuffer: 64 * 1024 });
    const p = uniquePrefix('slow');
    const sock = connect(Number(new URL(srv.url).port), '127.0.0.1');
    try {
      await new Promise<void>((resolve, reject) => sock.once('connect', resolve).once('error', reject));
      sock.write(`GET /api/v1/watch?prefix=${encodeURIComponent(p)} HTTP/1.1\r\nhost: 127.0.0.1\r\naccept: text/event-stream\r\n\r\n`);
      // Read the head and the opening, then stop reading: the kernel's buffers fill, then the server's.
      await new Promise<void>((resolve) => {
        let text = '';
        const onData = (d: Buffer) => {
          text += d.toString();
          if (text.includes('event: synced')) {
            sock.off('data', onData);
            sock.pause();
            resolve();
          }
        };
        sock.on('data', onData);
      });
      const reader = new Reader<WatchEvent>((await RemoteBackend.open(srv.url)).watch(p));
      await reader.until((e) => e.type === 'synced', 5000, 'synced');
      const dropped = async () => Number(/^roster_watch_streams_dropped_total (\d+)$/m.exec((await request(srv.url, 'GET', '/metrics')).text)?.[1]);
      expect(await dropped()).toBe(0);
      const value = 'x'.repeat(256 * 1024);
      let n = 0;
      // Far more than the loopback buffers hold (a few MiB): until the server cuts the stream.
      while ((await dropped()) === 0 && n < 400) {
        await Promise.all(Array.from({ length: 8 }, () => request(srv.url, 'PUT', `/api/v1/keys/${p}k${n++ % 16}`, { headers: J, body: JSON.stringify({ value }) })));
      }
      expect(await dropped()).toBe(1);
      expect(n).toBeLessThan(400);
      console.log(`[slow client] cut after ${n} puts of 256 KiB`);
      // The reader that keeps up saw every write.
      await reader.until((e) => e.type === 'put' && e.key === `${p}k${(n - 1) % 16}` && e.kv.version === Math.ceil(n / 16), 10_000, 'the last put');
      // The slow client's connection was ended by the server: reading on, it reaches the end.
      const ended = new Promise<void>((resolve) => sock.once('close', () => resolve()));
      sock.resume();
      sock.on('data', () => undefined);
      await ended;
    } finally {
      sock.destroy();
      await srv.cleanup();
    }
  }, 60_000);
});
