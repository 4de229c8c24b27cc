import { UnavailableError } from '../../core/errors.js';
import { jsonNonNegativeInt, parseQuery, readJsonObject } from '../http.js';
import { renderMetrics } from '../metrics.js';
import type { RouteModule } from '../context.js';

/** Operations: health, Prometheus metrics, compaction, snapshots (docs/operations.md). */
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
        const checker = s.checker;
        const text = renderMetrics({
          engine: s.engine,
          routes: s.routeStats,
          sseStreams: () => s.sse.size,
          sseDropped: () => s.sse.dropped,
          bodyRejected: () => s.bodiesRejected,
          startedAt: s.startedAt,
          extra: () => s.security.metricLines(),
          figures: (st) => s.tracker.figures(st),
          ...(checker
            ? {
                checks: () => ({
                  byTypeStatus: checker.statusCounts(),
                  ...checker.counters,
                  ...checker.probeLoad,
                  probeSeconds: checker.probeSeconds,
                }),
              }
            : {}),
          events: () => ({ counts: s.events.counts, held: s.events.last - s.events.first + (s.events.last > 0 ? 1 : 0), capacity: s.events.capacity, parked: s.events.parked }),
          logSuppressed: () => s.log.suppressed,
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
      // Drop the watch history up to `revision` (default: all of it), then bound the data dir: a new
      // log segment, a snapshot, and the old segments and snapshot removed. Answers once that is on
      // disk, with the data dir's size before and after.
      POST: async (x) => {
        parseQuery(x.query, []);
        const body = await readJsonObject(x.req, s.maxBody, ['revision'], true);
        const revision = body.revision === undefined ? undefined : jsonNonNegativeInt(body.revision, 'revision');
        const before = s.engine.stats();
        s.engine.compact(revision);
        const r = await s.engine.compactLog();
        const after = s.engine.stats();
        s.log.info(
          'admin.compaction',
          `compaction asked by ${x.principal.id}: history up to revision ${after.compactedRevision} dropped; data dir ${before.diskBytes} → ${after.diskBytes} bytes, ${before.segments} → ${after.segments} segment(s)`,
          { by: x.principal.id, compactedRevision: after.compactedRevision, diskBytesBefore: before.diskBytes, diskBytes: after.diskBytes, segments: after.segments },
        );
        x.json(200, {
          compactedRevision: after.compactedRevision,
          diskBytesBefore: before.diskBytes,
          diskBytes: after.diskBytes,
          segmentsBefore: before.segments,
          segments: after.segments,
          ...(r?.snapshot ? { snapshot: r.snapshot } : {}),
          removed: r?.removed.length ?? 0,
        });
      },
    },
  },
  {
    path: '/api/v1/admin/snapshot',
    name: 'admin_snapshot',
    acl: 'admin',
    methods: {
      // The whole state at one revision, streamed in the data dir's snapshot format (a backup:
      // `roster snapshot save`). Writes go on meanwhile; the stream is a capture of one instant.
      GET: async (x) => {
        parseQuery(x.query, []);
        const snap = await s.engine.exportSnapshot();
        const res = x.res;
        let gone = false;
        res.once('close', () => (gone = true));
        res.writeHead(200, [
          'content-type', 'application/octet-stream',
          'content-disposition', `attachment; filename="roster-${snap.revision}.snap"`,
          'cache-control', 'no-store',
          'x-content-type-options', 'nosniff',
          'x-roster-revision', String(snap.revision),
          'x-roster-keys', String(snap.keys),
          'x-roster-sessions', String(snap.sessions),
        ]);
        let bytes = 0;
        for (const piece of snap.pieces()) {
          if (gone) break;
          bytes += Buffer.byteLength(piece);
          if (!res.write(piece)) {
            await new Promise<void>((resolve) => {
              const done = () => {
                res.off('drain', done);
                res.off('close', done);
                resolve();
              };
              res.on('drain', done);
              res.on('close', done);
            });
          }
        }
        if (gone) {
          s.log.warn('admin.snapshot_aborted', `snapshot at revision ${snap.revision} for ${x.principal.id}: the client went away after ${bytes} bytes`, { revision: snap.revision, bytes, by: x.principal.id });
        } else {
          res.end();
          s.log.info('admin.snapshot', `snapshot at revision ${snap.revision} (${snap.keys} keys, ${snap.sessions} sessions, ${bytes} bytes) sent to ${x.principal.id}`, {
            revision: snap.revision,
            keys: snap.keys,
            sessions: snap.sessions,
            bytes,
            by: x.principal.id,
          });
        }
        x.handled();
      },
    },
  },
];
