import type { Engine, EngineStats } from '../engine/engine.js';
import { Histogram } from './histogram.js';
import { BUILD } from '../core/version.js';

/**
 * Prometheus text exposition (format 0.0.4) without a client library: a few counters kept in
 * plain numbers on the route objects, rendered on scrape. Recording a request is a handful of
 * integer operations and no allocation once a (method, status) pair has been seen.
 */

/** Upper bounds (seconds) of the request duration histogram. */
export const DURATION_BUCKETS = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export const METHODS = ['GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'OTHER'] as const;
export type MethodIndex = number;

export function methodIndex(m: string | undefined): MethodIndex {
  switch (m) {
    case 'GET': return 0;
    case 'HEAD': return 1;
    case 'POST': return 2;
    case 'PUT': return 3;
    case 'DELETE': return 4;
    case 'PATCH': return 5;
    case 'OPTIONS': return 6;
    default: return 7;
  }
}

export class RouteStats {
  /** (method index * 1000 + status) → count */
  readonly counts = new Map<number, number>();
  readonly duration = new Histogram(DURATION_BUCKETS);

  constructor(readonly name: string) {}

  observe(method: MethodIndex, status: number, seconds: number | undefined): void {
    const k = method * 1000 + status;
    this.counts.set(k, (this.counts.get(k) ?? 0) + 1);
    if (seconds !== undefined) this.duration.observe(seconds);
  }
}

export interface MetricsSources {
  engine: Engine;
  routes: readonly RouteStats[];
  sseStreams: () => number;
  sseDropped: () => number;
  bodyRejected: () => number;
  startedAt: number;
  /** More exposition lines (auth and quota figures). */
  extra?: () => string[];
  /** Services, instances and sessions at one revision (tracker.ts), over this scrape's read of the
   *  engine's stats (so roster_sessions and roster_leases are one figure read once). */
  figures?: (stats: EngineStats) => { services: number; instances: number; sessions: number };
  /** The health checker's figures, when the server runs one. */
  checks?: () => {
    byTypeStatus: ReadonlyMap<string, number>;
    probes: number;
    writes: number;
    conflicts: number;
    deregistered: number;
    queued: number;
    active: number;
    probeSeconds: Readonly<Record<string, Histogram>>;
  };
  /** Registry events recorded, by type, and the history's bounds. */
  events?: () => { counts: ReadonlyMap<string, number>; held: number; capacity: number; parked: number };
  /** Log lines left out by the log's rate limit. */
  logSuppressed?: () => number;
}

const CHECK_STATUSES = ['passing', 'warning', 'critical'] as const;
const CHECK_TYPES = ['http', 'tcp', 'ttl'] as const;

/** A label value: backslash, quote and newline escaped (exposition format). */
function esc(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

function fmt(n: number): string {
  return Number.isFinite(n) ? String(n) : n > 0 ? '+Inf' : n < 0 ? '-Inf' : 'NaN';
}

export function renderMetrics(src: MetricsSources): string {
  const out: string[] = [];
  const metric = (name: string, type: string, help: string, value: number, labels = '') => {
    out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`, `${name}${labels} ${fmt(value)}`);
  };

  out.push('# HELP roster_http_requests_total HTTP requests handled, by route, method and status.', '# TYPE roster_http_requests_total counter');
  for (const r of src.routes) {
    for (const [k, n] of r.counts) {
      const method = METHODS[Math.floor(k / 1000)] ?? 'OTHER';
      out.push(`roster_http_requests_total{route="${r.name}",method="${method}",status="${k % 1000}"} ${n}`);
    }
  }
  out.push(
    '# HELP roster_http_request_duration_seconds Time from request start to response written (watch streams excluded).',
    '# TYPE roster_http_request_duration_seconds histogram',
  );
  for (const r of src.routes) {
    if (r.duration.count > 0) out.push(...r.duration.render('roster_http_request_duration_seconds', `route="${r.name}"`, fmt));
  }

  out.push('# HELP roster_build_info The roster version and the Node.js runtime of this server (always 1).', '# TYPE roster_build_info gauge');
  out.push(`roster_build_info{version="${esc(BUILD.version)}",node="${esc(BUILD.node)}"} 1`);
  const s = src.engine.stats();
  if (src.figures) {
    const f = src.figures(s);
    metric('roster_services', 'gauge', 'Services with at least one instance (keys services/<service>/<id>).', f.services);
    metric('roster_instances', 'gauge', 'Registered instances (keys services/<service>/<id>).', f.instances);
    metric('roster_sessions', 'gauge', 'Live sessions (the same figure as roster_leases).', f.sessions);
  }
  metric('roster_keys', 'gauge', 'Keys in the store.', s.keys);
  metric('roster_leases', 'gauge', 'Live sessions (leases).', s.leases);
  metric('roster_watchers', 'gauge', 'Active engine watch subscriptions (SSE streams and in-process).', s.watchers);
  metric('roster_watch_streams', 'gauge', 'Open Server-Sent Events watch streams.', src.sseStreams());
  metric('roster_watch_streams_dropped_total', 'counter', 'Watch streams cut because the client read too slowly (it resumes by revision).', src.sseDropped());
  metric('roster_revision', 'gauge', 'Current store revision (applied).', s.revision);
  metric('roster_published_revision', 'gauge', 'Last durable revision, visible to readers and watchers.', src.engine.publishedRevision);
  metric('roster_compacted_revision', 'gauge', 'History at or below this revision is gone; resuming from it yields a reset.', s.compactedRevision);
  metric('roster_wal_fsyncs_total', 'counter', 'Write-ahead log fdatasync calls (each commits a batch of writes).', s.fsyncs);
  metric('roster_wal_inline_fsyncs_total', 'counter', 'Of roster_wal_fsyncs_total, those run on the event loop (an idle log on a fast disk).', s.inlineFsyncs);
  metric('roster_wal_torn_tails_total', 'counter', 'Torn last log records (writes cut by a crash, never acknowledged) cut when the data dir was opened.', s.tornTails);
  metric('roster_wal_torn_bytes_total', 'counter', 'Bytes of torn last log records cut when the data dir was opened.', s.tornBytes);
  metric('roster_storage_available', 'gauge', '1 while the data dir accepts writes; 0 after a write or fsync error (ENOSPC, EIO) until it does again.', s.storageAvailable ? 1 : 0);
  metric('roster_storage_failures_total', 'counter', 'Write or fsync errors of the data dir (each refuses writes until the disk accepts them again).', s.storageFailures);
  metric('roster_compactions_total', 'counter', 'Snapshots written by log compaction.', s.compactions);
  metric('roster_compaction_failures_total', 'counter', 'Compactions that failed (the log keeps every record; retried at the next threshold).', s.compactionFailures);
  metric('roster_data_dir_bytes', 'gauge', 'Bytes of log segments and snapshot in the data dir.', s.diskBytes);
  metric('roster_wal_segments', 'gauge', 'Log segment files in the data dir.', s.segments);
  metric('roster_wal_bytes', 'gauge', 'Bytes of the log segments (roster_data_dir_bytes less the snapshot).', s.walBytes);
  metric('roster_history_events', 'gauge', 'Events kept in memory for watchers to resume from.', s.historyEvents);
  metric('roster_history_bytes', 'gauge', 'Bytes charged to the events kept for resume (bounded by the history byte limit).', s.historyBytes);
  metric('roster_leases_expired_total', 'counter', 'Sessions that expired, whatever the cause: no keepalive within their TTL, or a connection-bound session whose connection closed without a clean close (roster_leases_disconnected_total).', src.engine.expiredLeases);
  metric('roster_leases_disconnected_total', 'counter', 'Of roster_leases_expired_total, connection-bound sessions ended because their connection closed without a clean close and did not come back within the grace.', src.engine.disconnectedLeases);
  metric('roster_http_bodies_rejected_total', 'counter', 'Request bodies rejected for exceeding the size limit.', src.bodyRejected());
  if (src.checks) {
    const c = src.checks();
    out.push('# HELP roster_checks Health checks the server runs, by type and status.', '# TYPE roster_checks gauge');
    for (const t of CHECK_TYPES) for (const st of CHECK_STATUSES) out.push(`roster_checks{type="${t}",status="${st}"} ${c.byTypeStatus.get(`${t}/${st}`) ?? 0}`);
    metric('roster_check_probes_total', 'counter', 'HTTP and TCP health-check probes run.', c.probes);
    metric('roster_check_probes_in_flight', 'gauge', 'Probes running now (bounded by the check concurrency).', c.active);
    metric('roster_check_probes_queued', 'gauge', 'Probes due but waiting for a free slot (the concurrency bound is reached).', c.queued);
    metric('roster_check_writes_total', 'counter', 'Status changes written into instances by the checker.', c.writes);
    metric('roster_check_write_conflicts_total', 'counter', 'Status writes that found the instance changed meanwhile (retried).', c.conflicts);
    metric('roster_check_deregistered_total', 'counter', 'Instances removed by DeregisterCriticalServiceAfter.', c.deregistered);
    out.push('# HELP roster_check_probe_duration_seconds Duration of health-check probes, by type.', '# TYPE roster_check_probe_duration_seconds histogram');
    for (const [type, h] of Object.entries(c.probeSeconds)) out.push(...h.render('roster_check_probe_duration_seconds', `type="${type}"`, fmt));
  }
  if (src.events) {
    const e = src.events();
    out.push('# HELP roster_events_total Registry events recorded in the event history, by type.', '# TYPE roster_events_total counter');
    for (const [type, n] of [...e.counts].sort()) out.push(`roster_events_total{type="${esc(type)}"} ${n}`);
    metric('roster_event_history_events', 'gauge', 'Events the event history holds now (bounded by its capacity).', e.held);
    metric('roster_event_history_capacity', 'gauge', 'Events the event history keeps at most (--event-history).', e.capacity);
    metric('roster_event_readers_parked', 'gauge', 'GET /api/v1/events requests waiting for the next event.', e.parked);
  }
  if (src.logSuppressed) metric('roster_log_lines_suppressed_total', 'counter', 'Log lines left out by the per-event rate limit.', src.logSuppressed());
  if (src.extra) out.push(...src.extra());

  const mem = process.memoryUsage();
  const cpu = process.cpuUsage();
  metric('process_resident_memory_bytes', 'gauge', 'Resident set size in bytes.', mem.rss);
  metric('nodejs_heap_size_total_bytes', 'gauge', 'V8 heap size in bytes.', mem.heapTotal);
  metric('nodejs_heap_size_used_bytes', 'gauge', 'V8 heap used in bytes.', mem.heapUsed);
  metric('nodejs_external_memory_bytes', 'gauge', 'Memory of C++ objects bound to JavaScript objects, in bytes.', mem.external);
  metric('process_cpu_user_seconds_total', 'counter', 'User CPU time spent in seconds.', cpu.user / 1e6);
  metric('process_cpu_system_seconds_total', 'counter', 'System CPU time spent in seconds.', cpu.system / 1e6);
  metric('process_cpu_seconds_total', 'counter', 'Total user and system CPU time spent in seconds.', (cpu.user + cpu.system) / 1e6);
  metric('process_start_time_seconds', 'gauge', 'Start time of the process since the Unix epoch in seconds.', Math.round(src.startedAt / 1000));
  out.push('');
  return out.join('\n');
}
