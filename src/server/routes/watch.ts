import { validatePrefix } from '../../core/names.js';
import { parseNonNegativeInt, parseQuery } from '../http.js';
import type { RouteModule } from '../context.js';

/**
 * Watch a prefix as Server-Sent Events: `id:` = revision; the snapshot is one event (then
 * `synced`); `Last-Event-ID` (or `fromRevision`) resumes with the backlog after it, or a `reset`
 * when that history is gone (beyond the engine's history bounds). Openings are streamed (sse.ts).
 */
export const watchRoutes: RouteModule = (s) => [
  {
    path: '/api/v1/watch',
    name: 'watch',
    acl: 'token',
    methods: {
      GET: (x) => {
        const q = parseQuery(x.query, ['prefix', 'fromRevision']);
        const prefix = validatePrefix(q.prefix ?? '');
        let from: number | undefined;
        const lastId = x.req.headers['last-event-id'];
        // Last-Event-ID wins: an EventSource reconnect keeps the original URL but sends the newer id.
        if (typeof lastId === 'string' && lastId !== '') from = parseNonNegativeInt(lastId.trim(), 'Last-Event-ID');
        else if (q.fromRevision !== undefined) from = parseNonNegativeInt(q.fromRevision, 'fromRevision');
        s.security.requireReadRange(x.principal, prefix);
        const release = s.security.quotas.openWatch(x.principal.id);
        s.sse.open(x.res, s.engine, prefix, from, release);
        x.streamed(200);
      },
    },
  },
];
