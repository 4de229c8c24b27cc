/**
 * The client side of a session channel (backends/remote/channel.ts) as a state machine, over a fake
 * transport that plays the server (server/channels.ts, routes/sessions.ts) on a fake clock:
 *
 * - a grant that names a channel the server has forgotten is asked again on a fresh channel;
 * - a grant the server refuses because its channel expired during the grant (the server revokes
 *   it: the race of POST /sessions) is asked again on the channel that replaced it, without
 *   dropping that one;
 * - an attach that failed after a reconnect is retried on the next good keepalive: the sessions
 *   are renewed through the new channel, not presumed lost a TTL later.
 *
 * Then the server's side of that race over real HTTP: a channel that expires between the engine's
 * grant and the attach makes POST /api/v1/sessions answer 404 naming the channel, and the session
 * it granted is revoked (not left renewable through a forgotten channel). And the channel's stream
 * has a watch stream's head and gets the hub's heartbeats.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SessionChannel, type ChannelTransport } from '../../src/backends/remote/channel.js';
import type { StreamSink } from '../../src/backends/remote/transport.js';
import { LeaseSession } from '../../src/contract/session.js';
import { NotFoundError, RosterError, UnavailableError } from '../../src/core/errors.js';
import { Engine } from '../../src/engine/engine.js';
import { launchServer, type RosterServer } from '../../src/server/server.js';
import { FakeClock } from '../../src/testing/clock.js';
import { openSse } from '../helpers/sse.js';
import { eventually } from '../helpers/watch.js';

interface FakeStream {
  id: string;
  resumed: boolean;
  /** The client still holds it. */
  open: boolean;
  /** The opening event was delivered. */
  named: boolean;
  /** The server ends the stream (the client sees its connection close). */
  end(): void;
}

const turn = () => new Promise<void>((r) => setImmediate(r));

/** The server as the channel's transport sees it: channels, their sessions, one stream each. */
class FakeServer implements ChannelTransport {
  readonly requestTimeout = 30_000;
  readonly channels = new Map<string, Set<string>>();
  readonly streams: FakeStream[] = [];
  readonly calls: { method: string; path: string; body: unknown }[] = [];
  private n = 0;
  /** Attach requests to refuse with 503 (unavailable) before answering again. */
  failAttaches = 0;
  /** The next POST /sessions finds its channel expired meanwhile (see grantRace). */
  race = false;

  call(method: string, path: string, body: string | undefined): Promise<unknown> {
    const b: unknown = body === undefined ? undefined : JSON.parse(body);
    this.calls.push({ method, path, body: b });
    return this.answer(path, b as Record<string, unknown> | undefined);
  }

  private async answer(path: string, body: Record<string, unknown> | undefined): Promise<unknown> {
    await turn(); // a reply is never synchronous
    if (path === '/api/v1/sessions') {
      const on = body!.channel as string;
      if (this.race) return this.grantRace(on);
      const sessions = this.known(on);
      const id = `s${++this.n}`;
      sessions.add(id);
      return { id, ttl: body!.ttl };
    }
    const m = /^\/api\/v1\/channels\/([^/]+)\/(keepalive|attach|detach)$/.exec(path);
    if (!m) throw new NotFoundError(`no route ${path}`);
    const sessions = this.known(m[1]!);
    if (m[2] === 'attach') {
      if (this.failAttaches > 0) {
        this.failAttaches--;
        throw new UnavailableError('unexpected reply from roster server (HTTP 503)');
      }
      for (const s of body!.sessions as { id: string }[]) sessions.add(s.id);
    }
    return { lost: [] };
  }

  /** routes/sessions.ts when channel `on` expires between the engine's grant and the attach: the
   *  grant is revoked and the reply is 404 naming the channel. By then the client has seen its
   *  stream close and opened the channel that replaces it. */
  private async grantRace(on: string): Promise<never> {
    this.race = false;
    this.expire(on);
    for (let i = 0; i < 100 && !this.streams.some((s) => s.id !== on && s.named); i++) await turn();
    throw this.gone(on);
  }

  private gone(id: string): NotFoundError {
    return new NotFoundError(`session channel ${id} not found: its connection ended; open a new one`, { details: { channel: id } });
  }

  private known(id: string): Set<string> {
    const ch = this.channels.get(id);
    if (!ch) throw this.gone(id);
    return ch;
  }

  /** The channel's connection dropped and its grace passed: the server forgets it. */
  expire(id: string): void {
    this.channels.delete(id);
    for (const s of this.streams) if (s.id === id && s.open) s.end();
  }

  /** The server forgets the channel while the client's stream still looks open (a restart or a
   *  partition the client has not noticed yet). */
  forget(id: string): void {
    this.channels.delete(id);
  }

  stream(path: string, signal: AbortSignal, sink: StreamSink): Promise<{ status: number; text: string }> {
    const q = new URLSearchParams(path.split('?')[1] ?? '');
    const resume = q.get('resume');
    const resumed = resume !== null && this.channels.has(resume);
    const id = resumed ? resume : `ch${++this.n}`;
    if (!resumed) this.channels.set(id, new Set());
    return new Promise((resolve, reject) => {
      const st: FakeStream = {
        id,
        resumed,
        open: true,
        named: false,
        end: () => {
          st.open = false;
          resolve({ status: 200, text: '' });
        },
      };
      this.streams.push(st);
      signal.addEventListener(
        'abort',
        () => {
          st.open = false;
          reject(signal.reason);
        },
        { once: true },
      );
      void turn().then(() => {
        if (!st.open) return;
        try {
          sink.open({ 'roster-heartbeat-ms': '600000' }); // (liveness is not what these tests are about)
          // The opening in two pieces, as a socket may deliver it.
          const frame = Buffer.from(`event: channel\ndata: ${JSON.stringify({ id, resumed, graceMs: 100 })}\n\n:\n\n`);
          sink.data(frame.subarray(0, 20));
          sink.data(frame.subarray(20));
          st.named = true;
        } catch (e) {
          st.open = false;
          reject(e);
        }
      });
    });
  }

  error(e: unknown): unknown {
    return e instanceof RosterError ? e : new UnavailableError(String(e));
  }

  posts(path: string): { method: string; path: string; body: unknown }[] {
    return this.calls.filter((c) => c.path === path);
  }
}

function setup() {
  const clock = new FakeClock();
  const server = new FakeServer();
  const ch = new SessionChannel(server, undefined, { baseMs: 100, capMs: 1000 }, clock);
  /** RemoteBackend's grant on a channel (backend.ts), with a LeaseSession of the fake clock. */
  const grant = async (ttl: number, bound = false): Promise<{ session: LeaseSession; on: string }> => {
    const r = await ch.grant(async (on) => {
      const g = (await server.call('POST', '/api/v1/sessions', JSON.stringify({ ttl, channel: on, ...(bound ? { bound } : {}) }))) as { id: string; ttl: number };
      const session = new LeaseSession(g.id, g.ttl, { revoke: async () => undefined }, { clock, keepProcessAlive: false, connectionBound: bound });
      ch.add(session, bound, on);
      return { session, on };
    });
    if (!r) throw new Error('the fake server has channels');
    return r;
  };
  return { clock, server, ch, grant };
}

describe('SessionChannel (client) over a fake server', () => {
  it('a grant naming a channel the server forgot is asked again on a fresh channel', async () => {
    const { server, ch, grant } = setup();
    try {
      const first = await grant(3000);
      expect(first.on).toBe('ch1');
      // The server forgets ch1 while the client's stream still looks open.
      server.forget('ch1');
      const { session, on } = await grant(3000, true);
      expect(server.posts('/api/v1/sessions').map((c) => (c.body as { channel: string }).channel)).toEqual(['ch1', 'ch1', on]);
      expect(on).not.toBe('ch1');
      // The old stream was dropped and the fresh one asked to resume ch1 (the server made a new one).
      expect(server.streams.map((s) => [s.id, s.resumed, s.open])).toEqual([
        ['ch1', false, false],
        [on, false, true],
      ]);
      expect(server.channels.get(on)?.has(session.id)).toBe(true);
      expect(session.lost).toBe(false);
    } finally {
      ch.close();
    }
  });

  it('a grant refused because its channel expired during it (POST /sessions race) is granted on the channel that replaced it, which is kept', async () => {
    const { server, ch, grant } = setup();
    try {
      await grant(3000);
      server.race = true;
      const { session, on } = await grant(3000, true);
      expect(on).toBe('ch3'); // (ch1, then its first session s2)
      expect(server.posts('/api/v1/sessions').map((c) => (c.body as { channel: string }).channel)).toEqual(['ch1', 'ch1', 'ch3']);
      // Two streams only: the 404 for ch1 arrived after the client had replaced it, so the fresh
      // stream is not dropped for it.
      expect(server.streams.map((s) => [s.id, s.open])).toEqual([
        ['ch1', false],
        ['ch3', true],
      ]);
      expect([...server.channels.get('ch3')!]).toContain(session.id);
    } finally {
      ch.close();
    }
  });

  it('an attach that failed after a reconnect is retried on the next good keepalive: the session is renewed, not presumed lost', async () => {
    const { clock, server, ch, grant } = setup();
    try {
      const ttl = 3000;
      const { session } = await grant(ttl, true);
      // The server restarts: ch1 is gone, the client's stream ends; its reconnect gets ch2 and the
      // attach of the session to ch2 fails (a 503).
      server.failAttaches = 1;
      server.expire('ch1');
      await eventually(() => server.streams.length === 2 && server.streams[1]!.named, 2000, 'reconnected');
      const next = server.streams[1]!;
      expect(next.resumed).toBe(false);
      const attaches = () => server.posts(`/api/v1/channels/${next.id}/attach`).length;
      const keepalives = () => server.posts(`/api/v1/channels/${next.id}/keepalive`).length;
      await eventually(() => attaches() === 1, 2000, 'first attach');
      await clock.advance(0);
      expect(server.channels.get(next.id)!.size).toBe(0);
      // The next keepalive (about ttl/3) succeeds: the attach is sent again, and succeeds.
      await clock.advance(ttl / 3 + ttl / 30 + 1);
      expect(keepalives()).toBe(1);
      await eventually(() => attaches() === 2, 2000, 'attach retried');
      await eventually(() => server.channels.get(next.id)!.has(session.id), 2000, 'attached');
      // Renewed through the new channel for several TTLs from now on.
      await clock.advance(4 * ttl);
      expect(session.lost).toBe(false);
      // One every ttl/3 +-10% (jitter): after the first, 10 to 13 more in 4 TTLs.
      expect(keepalives()).toBeGreaterThanOrEqual(11);
      expect(keepalives()).toBeLessThanOrEqual(14);
      expect(attaches()).toBe(2);
    } finally {
      ch.close();
    }
  });
});

describe('session channels on a real server', () => {
  let engine: Engine;
  let server: RosterServer;
  beforeAll(async () => {
    engine = await Engine.open();
    server = await launchServer({ port: 0, engine, heartbeatMs: 50 });
  });
  afterAll(async () => {
    await server?.close();
    await engine?.close();
  });

  const post = (path: string, body?: unknown) =>
    fetch(`${server.url}${path}`, {
      method: 'POST',
      headers: body === undefined ? { 'x-roster-request': '1' } : { 'content-type': 'application/json' },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    });

  it("a channel's stream has a watch stream's head and the hub's heartbeats", async () => {
    const channel = await openSse(server.url, '/api/v1/channels');
    const watch = await openSse(server.url, '/api/v1/watch?prefix=hb/');
    try {
      expect(channel.status).toBe(200);
      for (const h of ['content-type', 'cache-control', 'x-accel-buffering', 'roster-heartbeat-ms', 'transfer-encoding']) {
        expect(channel.headers[h], h).toBe(watch.headers[h]);
      }
      expect(channel.headers['roster-heartbeat-ms']).toBe('50');
      expect((await channel.frames.next(2000, 'opening')).event).toBe('channel');
      await eventually(() => channel.heartbeats() >= 3, 5000, 'three heartbeats on the channel');
    } finally {
      channel.close();
      watch.close();
    }
  });

  it('a channel that expires between the grant and the attach: POST /sessions answers 404 naming it and revokes the session it granted', async () => {
    const sse = await openSse(server.url, '/api/v1/channels?graceMs=0');
    const { id } = (await sse.frames.next(2000, 'opening')).data as { id: string };
    const granted: string[] = [];
    const grant = engine.grant.bind(engine);
    let race = false;
    engine.grant = async (ttl: number) => {
      const g = await grant(ttl);
      granted.push(g.id);
      if (race) {
        // The channel's connection drops while the grant is being made; its grace (0) passes.
        sse.close();
        await eventually(async () => (await post(`/api/v1/channels/${id}/keepalive`)).status === 404, 5000, 'channel forgotten');
      }
      return g;
    };
    try {
      // Control: while the channel lives, the same request grants and binds.
      const ok = await post('/api/v1/sessions', { ttl: 5000, channel: id, bound: true });
      expect(ok.status).toBe(201);
      expect(engine.leaseInfo(granted[0]!)).toBeDefined();
      race = true;
      const r = await post('/api/v1/sessions', { ttl: 5000, channel: id, bound: true });
      const body = (await r.json()) as { error: { code: string; details?: { channel?: string } } };
      expect(r.status).toBe(404);
      expect(body.error.code).toBe('NOT_FOUND');
      expect(body.error.details?.channel).toBe(id);
      expect(granted).toHaveLength(2);
      expect(engine.leaseInfo(granted[1]!)).toBeUndefined();
      // The control's bound session ended with its channel (grace 0).
      await eventually(() => engine.leaseInfo(granted[0]!) === undefined, 5000, 'bound session expired');
    } finally {
      engine.grant = grant;
      sse.close();
    }
  });
});
