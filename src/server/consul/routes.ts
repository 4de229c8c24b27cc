import type { RouteModule } from '../context.js';
import type { Handler, HttpMethod } from '../router.js';
import { createConsulApi, type ConsulApi, type ConsulApiOptions } from './index.js';

/** The /v1 API a server mounted (the security battery lists its endpoints). */
export const consulApis = new WeakMap<object, ConsulApi>();

/** Options of the /v1 API a server mounts (the engine and checker are the server's own). */
export type ConsulRoutesOptions = Omit<ConsulApiOptions, 'engine' | 'checker'>;

const METHODS: readonly HttpMethod[] = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'];

/**
 * The Consul-compatible `/v1` API as a route group. It speaks Consul's wire format (its own
 * errors, `X-Consul-*` headers, blocking queries), so it answers on the response itself and the
 * router only records the exchange. Parked blocking queries are released when the server closes.
 */
export function consulRoutes(opts: ConsulRoutesOptions = {}): RouteModule {
  return (s) => {
    const api = createConsulApi({
      onError: (e) => s.onError(e),
      maxBodyBytes: s.maxBody,
      authorize: (_token, need, req) => {
        s.security.consulAuthorize(req, need);
      },
      sessionGuard: s.security.consulSessionGuard,
      ...opts,
      engine: s.engine,
      ...(s.checker ? { checker: s.checker } : {}),
    });
    s.onClose(() => api.close());
    consulApis.set(s, api);
    const h: Handler = async (x) => {
      try {
        await api.handle(x.req, x.res);
      } finally {
        x.handled();
      }
    };
    const methods = Object.fromEntries(METHODS.map((m) => [m, h]));
    // Admitted by the router like every route (Host, cross-site, a valid token when auth is on);
    // each /v1 handler then asks the authorize seam for the resource it touches.
    return [
      { path: '/v1/*', name: 'consul_v1', acl: 'token', consulWire: true, methods },
      { path: '/v1/kv', name: 'consul_v1', acl: 'token', consulWire: true, methods },
    ];
  };
}
