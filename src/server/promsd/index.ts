/**
 * Prometheus HTTP service discovery (`http_sd_configs`, Prometheus ≥ 2.28): every registered
 * instance as a target group, so Prometheus scrapes each one with no glue. Mounted by the roster
 * server at `GET /api/v1/prometheus/sd`:
 *
 *   scrape_configs:
 *     - job_name: roster
 *       http_sd_configs: [{ url: http://127.0.0.1:8470/api/v1/prometheus/sd, refresh_interval: 30s }]
 *
 * Body: `[{"targets":["<host:port>"],"labels":{...}}, ...]`, one group per instance (their labels
 * differ), sorted by service then id. Labels (all strings, dropped by Prometheus after relabeling
 * unless relabeled into target labels):
 *
 *   __meta_roster_service, __meta_roster_id, __meta_roster_address, __meta_roster_port
 *   __meta_roster_tags          ",a,b," (Prometheus' own convention: match with `.*,a,.*`)
 *   __meta_roster_metadata_<k>  one per metadata entry; <k> with every character outside
 *                               [A-Za-z0-9_] replaced by '_' (the first of colliding keys wins)
 *   __meta_roster_zone          when set
 *   __meta_roster_weight, __meta_roster_status ("up" | "draining")
 *   __meta_roster_health        "passing" | "warning" | "critical"
 *
 * Every instance is listed, whatever its health: Prometheus should see an unhealthy target go
 * down rather than lose it; filter with relabeling on __meta_roster_health. Query parameters:
 * `service` (repeatable) limits the list to those services.
 *
 * The view (../services-view.ts) is opened on the first request, so a server nobody scrapes
 * pays nothing for it.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Backend } from '../../contract/types.js';
import { InvalidArgumentError, RosterError } from '../../core/errors.js';
import { validateServiceName } from '../../core/names.js';
import type { Engine } from '../../engine/engine.js';
import { ServicesView, type ViewInstance, type ViewSource } from '../services-view.js';
import type { RouteModule } from '../context.js';

export interface TargetGroup {
  targets: string[];
  labels: Record<string, string>;
}

export interface PromSdHandler {
  /** The http_sd body for a raw query string (without '?'); InvalidArgumentError on bad input. */
  render(query: string): Promise<string>;
  /** A plain node:http handler (for mounting outside the roster server). */
  handle(req: IncomingMessage, res: ServerResponse): void;
  close(): Promise<void>;
}

const META = '__meta_roster_';

/** The target group of one instance. */
export function targetGroup(v: ViewInstance): TargetGroup {
  const i = v.instance;
  const host = i.port === undefined ? i.address : i.address.includes(':') ? `[${i.address}]` : i.address;
  const labels: Record<string, string> = {
    [`${META}service`]: i.service,
    [`${META}id`]: i.id,
    [`${META}address`]: i.address,
    [`${META}port`]: i.port === undefined ? '' : String(i.port),
    [`${META}tags`]: i.tags.length ? `,${i.tags.join(',')},` : '',
    [`${META}weight`]: String(i.weight),
    [`${META}status`]: i.status,
    [`${META}health`]: v.health,
  };
  if (i.zone) labels[`${META}zone`] = i.zone;
  for (const k of Object.keys(i.metadata).sort()) {
    const name = `${META}metadata_${k.replace(/[^A-Za-z0-9_]/g, '_')}`;
    if (!(name in labels)) labels[name] = i.metadata[k]!;
  }
  return { targets: [i.port === undefined ? host : `${host}:${i.port}`], labels };
}

/** Percent-decode a query part; malformed encoding is the client's error (found by the fuzz). */
function decodeQueryPart(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch (e) {
    throw new InvalidArgumentError(`malformed percent-encoding in the query ${JSON.stringify(s.slice(0, 40))}`, { cause: e });
  }
}

export function createPromSdHandler(source: ViewSource | { view: ServicesView }): PromSdHandler {
  let view: Promise<ServicesView> | undefined;
  const getView = () => (view ??= 'view' in source ? Promise.resolve(source.view) : ServicesView.open(source as { engine: Engine } | { backend: Backend }));
  const render = async (query: string): Promise<string> => {
    const only = new Set<string>();
    for (const part of query === '' ? [] : query.split('&')) {
      const eq = part.indexOf('=');
      const k = decodeQueryPart(eq < 0 ? part : part.slice(0, eq));
      const val = eq < 0 ? '' : decodeQueryPart(part.slice(eq + 1).replace(/\+/g, ' '));
      if (k !== 'service') throw new InvalidArgumentError(`unknown query parameter ${JSON.stringify(k.slice(0, 64))}: expected service`, { details: { field: k.slice(0, 64) } });
      only.add(validateServiceName(val));
    }
    const v = await getView();
    const groups: TargetGroup[] = [];
    for (const s of only.size ? [...only].sort() : v.services()) {
      const list = v.instances(s).sort((a, b) => (a.instance.id < b.instance.id ? -1 : a.instance.id > b.instance.id ? 1 : 0));
      for (const i of list) groups.push(targetGroup(i));
    }
    return JSON.stringify(groups);
  };
  return {
    render,
    handle(req, res) {
      const url = req.url ?? '/';
      const qi = url.indexOf('?');
      render(qi < 0 ? '' : url.slice(qi + 1)).then(
        (body) => {
          res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' });
          res.end(body);
        },
        (e: unknown) => {
          const err = e instanceof RosterError ? e : new RosterError('INTERNAL', 'internal error', { cause: e });
          res.writeHead(err.status, { 'content-type': 'application/json; charset=utf-8' });
          res.end(JSON.stringify({ error: err.toJSON() }));
        },
      );
    },
    async close() {
      // Only a view this handler opened is closed (a view passed in belongs to the caller).
      if (view && !('view' in source)) await (await view).close();
      view = undefined;
    },
  };
}

/** `GET /api/v1/prometheus/sd` on a roster server, over its own engine (the view opens on the
 *  first request and closes with the server). */
export const promSdRoutes: RouteModule = (s) => {
  const sd = createPromSdHandler({ engine: s.engine });
  s.onClose(() => sd.close());
  return [
    {
      path: '/api/v1/prometheus/sd',
      name: 'prometheus_sd',
      // Every instance of every service: a token that may read every service ({"service": "*"}).
      acl: 'token',
      methods: {
        GET: async (x) => {
          s.security.requireService(x.principal, undefined, 'read');
          x.reply(200, await sd.render(x.query));
        },
      },
    },
  ];
};
