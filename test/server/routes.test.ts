/**
 * The router's extension point: a route group mounted next to the built-in API (as the Consul /v1,
 * DNS and Prometheus SD groups will be), over real HTTP, with the same error handling and metrics
 * as the built-in routes; patterns match by their fixed text; a path mounted twice fails the start.
 */
import { describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { launchServer } from '../../src/server/server.js';
import type { RouteModule } from '../../src/server/context.js';
import { NotFoundError } from '../../src/core/errors.js';
import { parseQuery } from '../../src/server/http.js';
import { request } from '../helpers/http.js';

/** A toy group: the value of a key under /v1/kv/<key>, as a Consul-style route would read it. */
const kvGroup: RouteModule = (s) => [
  {
    path: '/v1/kv/*',
    name: 'toy_kv',
    acl: 'token',
    methods: {
      GET: async (x) => {
        parseQuery(x.query, []);
        const kv = await s.engine.get(decodeURIComponent(x.param));
        if (!kv) throw new NotFoundError(`no key ${x.param}`);
        x.json(200, [{ Key: kv.key, Value: Buffer.from(kv.value).toString('base64'), ModifyIndex: kv.modRevision }]);
      },
    },
  },
  { path: '/v1/status/*/leader', name: 'toy_leader', acl: 'open', methods: { GET: (x) => x.json(200, { of: x.param }) } },
];

describe('mounting a route group', () => {
  it('serves it beside the built-in API, with JSON errors, 405s and metrics of its own', async () => {
    const engine = await Engine.open();
    const server = await launchServer({ port: 0, engine, routes: [kvGroup] });
    try {
      await engine.put('config/a', 'hello');
      const ok = await request(server.url, 'GET', '/v1/kv/config/a');
      expect(ok.status).toBe(200);
      expect(ok.json).toEqual([{ Key: 'config/a', Value: Buffer.from('hello').toString('base64'), ModifyIndex: expect.any(Number) }]);
      expect((await request(server.url, 'GET', '/v1/kv/none')).json).toMatchObject({ error: { code: 'NOT_FOUND' } });
      const bad = await request(server.url, 'DELETE', '/v1/kv/config/a');
      expect(bad.status).toBe(405);
      expect(bad.headers.allow).toBe('GET');
      expect((await request(server.url, 'GET', '/v1/status/raft/leader')).json).toEqual({ of: 'raft' });
      // The built-in API is unchanged next to it.
      expect((await request(server.url, 'GET', '/api/v1/keys/config/a')).json).toMatchObject({ kv: { value: 'hello' } });
      const metrics = (await request(server.url, 'GET', '/metrics')).text;
      expect(metrics).toContain('roster_http_requests_total{route="toy_kv",method="GET",status="200"} 1');
      expect(metrics).toContain('roster_http_requests_total{route="toy_kv",method="DELETE",status="405"} 1');
    } finally {
      await server.close();
      await engine.close();
    }
  });

  it('a path mounted twice fails the start with INVALID_ARGUMENT', async () => {
    const engine = await Engine.open();
    try {
      const twice: RouteModule = () => [{ path: '/api/v1/keys/*', name: 'mine', acl: 'admin', methods: {} }];
      await expect(launchServer({ port: 0, engine, routes: [twice] })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT' });
      // A route without an ACL decision (from JavaScript, or cast past the type) fails the start too.
      const undecided = (() => [{ path: '/mine', name: 'mine', methods: {} }]) as unknown as RouteModule;
      await expect(launchServer({ port: 0, engine, routes: [undecided] })).rejects.toMatchObject({ code: 'INVALID_ARGUMENT', message: expect.stringMatching(/acl/) });
    } finally {
      await engine.close();
    }
  });
});
