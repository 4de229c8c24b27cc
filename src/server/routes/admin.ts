import { UnavailableError } from '../../core/errors.js';
import { jsonNonNegativeInt, parseQuery, readJsonObject } from '../http.js';
import { renderMetrics } from '../metrics.js';
import type { RouteModule } from '../context.js';

/** Operations: health, Prometheus metrics, compaction. */
export const adminRoutes: RouteModule = (s) => [
  {
    path: '/healthz',
    name: 'healthz',
    // Liveness probes carry no token; the reply says nothing beyond "up" and a revision.
    acl: 'open',
    methods: {
      GET: (x) => {
        parseQuery(x.query, []);
        const h = s.engine.health();
        if (h.ok && s.open) {
          x.reply(200, `{"status":"ok","revision":${s.engine.publishedRevision},"uptimeSeconds":${Math.round((Date.now() - s.startedAt) / 1000)}}`);
        } else {
          const error = new UnavailableError(h.reason ?? 'server is shutting down');
          x.json(503, { status: 'unavailable', error: error.toJSON() });
        }
      },
    },
  },
  {
    path: '/metrics',
    name: 'metrics',
    acl: 'metrics',
    methods: {
      GET: (x) => {
        parseQuery(x.query, []);
        const text = renderMetrics({
          engine: s.engine,
          routes: s.routeStats,
          sseStreams: () => s.sse.size,
          sseDropped: () => s.sse.dropped,
          bodyRejected: () => s.bodiesRejected,
          startedAt: s.startedAt,
          extra: () => s.security.metricLines(),
        });
        x.reply(200, text, 'text/plain; version=0.0.4; charset=utf-8');
      },
    },
  },
  {
    path: '/api/v1/admin/compact',
    name: 'admin_compact',
    acl: 'admin',
    methods: {
      POST: async (x) => {
        parseQuery(x.query, []);
        const body = await readJsonObject(x.req, s.maxBody, ['revision'], true);
        const revision = body.revision === undefined ? undefined : jsonNonNegativeInt(body.revision, 'revision');
        s.engine.compact(revision);
        x.json(200, { compactedRevision: s.engine.stats().compactedRevision });
      },
    },
  },
];
