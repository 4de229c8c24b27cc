import type { RouteModule } from '../context.js';
import type { Handler, HttpMethod } from '../router.js';
import { createConsulApi, type ConsulApiOptions } from './index.js';

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
      ...opts,
      engine: s.engine,
      ...(s.checker ? { checker: s.checker } : {}),
    });
    s.onClose(() => api.close());
    const h: Handler = async (x) => {
      try {
        await api.handle(x.req, x.res);
      } finally {
        x.handled();
      }
    };
    const methods = Object.fromEntries(METHODS.map((m) => [m, h]));
    return [
      { path: '/v1/*', name: 'consul_v1', methods },
      { path: '/v1/kv', name: 'consul_v1', methods },
    ];
  };
}
