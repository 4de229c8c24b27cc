import { validatePrefix } from '../../core/names.js';
import { parseNonNegativeInt, parseQuery } from '../http.js';
import { frame } from '../sse.js';
import type { RouteModule } from '../context.js';

/**
 * Watch a prefix as Server-Sent Events: `id:` = revision; the snapshot is one event (then
 * `synced`); `Last-Event-ID` (or `fromRevision`) resumes with the backlog after it, or a `reset`
 * when that history is gone.
 */
export const watchRoutes: RouteModule = (s) => [
  {
    path: '/api/v1/watch',
    name: 'watch',
    methods: {
      GET: (x) => {
        const q = parseQuery(x.query, ['prefix', 'fromRevision']);
        const prefix = validatePrefix(q.prefix ?? '');
        let from: number | undefined;
        const lastId = x.req.headers['last-event-id'];
        // Last-Event-ID wins: an EventSource reconnect keeps the original URL but sends the newer id.
        if (typeof lastId === 'string' && lastId !== '') from = parseNonNegativeInt(lastId.trim(), 'Last-Event-ID');
        else if (q.fromRevision !== undefined) from = parseNonNegativeInt(q.fromRevision, 'fromRevision');
        s.sse.open(
          x.res,
          (send) => s.engine.subscribe(prefix, from, send),
          (sub) => {
            let first = '';
            if (sub.snapshot) {
              const rev = sub.snapshot.revision;
              first += frame(sub.reset ? 'reset' : 'snapshot', rev, JSON.stringify(sub.snapshot));
              first += frame('synced', rev, `{"revision":${rev}}`);
            } else {
              for (const ev of sub.backlog) first += frame(ev.type, ev.revision, JSON.stringify(ev));
            }
            return first;
          },
        );
        x.streamed(200);
      },
    },
  },
];
