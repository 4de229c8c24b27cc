import type { IncomingMessage } from 'node:http';
import { isIP } from 'node:net';
import { hostname } from 'node:os';
import { InvalidArgumentError, PermissionDeniedError } from '../../core/errors.js';
import { HttpError } from '../http.js';

/**
 * The HTTP edge: what every request must pass before its route sees it, whatever its token.
 *
 * - Host allow-list, against DNS rebinding. A page on evil.example whose name is re-pointed at
 *   127.0.0.1 makes the browser send `Host: evil.example`; it is refused. Allowed by default: any IP
 *   literal (a rebinding attack needs a name the attacker controls, never an address), `localhost`
 *   and `*.localhost`, the name the server listens on, this machine's host name, and the names
 *   configured (`allowedHosts`; `'*'` turns the check off, e.g. behind a proxy that checks it).
 *   A request without Host (HTTP/1.0) is not a browser's and passes.
 * - Cross-site browser requests: a request a browser marks `Sec-Fetch-Site: cross-site` or
 *   `same-site`, or that carries an `Origin` other than the server's own or a configured CORS
 *   origin, is refused on every route but the dashboard's pages (a link to /ui from elsewhere is
 *   a navigation and must work). Non-browser clients send neither header.
 * - CSRF on roster's API: a state-changing request (not GET/HEAD/OPTIONS) must carry
 *   `Content-Type: application/json` or an `X-Roster-Request` header, with or without a body. A
 *   cross-site form or `fetch(..., {mode: 'no-cors'})` can send neither without a CORS preflight,
 *   which this server never grants unless configured. The Consul API is exempt (its clients send
 *   PUT with no body, or form bodies, and no custom header): PUT and DELETE cannot be sent
 *   cross-site without a preflight, its state-changing GETs are caught by the cross-site rule, and
 *   with auth on every /v1 request needs a token, which a browser never adds by itself.
 * - CORS: off unless origins are configured; then those origins get the CORS headers and
 *   preflights are answered.
 */
export interface EdgeOptions {
  /** The address the server listens on (allowed as a Host). */
  listenHost: string;
  /** More Host names to accept ('*' accepts every Host). */
  allowedHosts?: readonly string[] | '*';
  /** Origins allowed cross-origin access (CORS). Default: none. */
  corsOrigins?: readonly string[];
}

export const CSRF_HEADER = 'x-roster-request';

const WILDCARDS = new Set(['0.0.0.0', '::', '[::]', '']);

/** Security headers of the dashboard's pages (the CSP replaces the page's meta tag as the enforced
 *  one); `X-Content-Type-Options: nosniff` is on every reply (router.ts). */
export const UI_HEADERS: readonly string[] = [
  'content-security-policy',
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  'x-frame-options', 'DENY',
  'referrer-policy', 'no-referrer',
  'cross-origin-opener-policy', 'same-origin',
  'cross-origin-resource-policy', 'same-origin',
];

function normaliseHostName(h: string): string {
  let s = h.trim().toLowerCase();
  if (s.endsWith('.')) s = s.slice(0, -1);
  return s;
}

/** The host name of a Host header value (without port; IPv6 without brackets). */
export function hostOfHeader(v: string): string | undefined {
  let s = v.trim();
  if (s.startsWith('[')) {
    const end = s.indexOf(']');
    if (end < 0) return undefined;
    const rest = s.slice(end + 1);
    if (rest !== '' && !/^:\d{1,5}$/.test(rest)) return undefined;
    return s.slice(1, end).toLowerCase();
  }
  const colon = s.lastIndexOf(':');
  if (colon >= 0) {
    if (!/^\d{1,5}$/.test(s.slice(colon + 1))) return undefined;
    s = s.slice(0, colon);
  }
  if (s === '' || !/^[A-Za-z0-9.\-_]+$/.test(s)) return undefined;
  return normaliseHostName(s);
}

export class Edge {
  private readonly names: Set<string> | undefined;
  readonly corsOrigins: ReadonlySet<string>;

  constructor(opts: EdgeOptions) {
    if (opts.allowedHosts === '*') {
      this.names = undefined;
    } else {
      const names = new Set<string>(['localhost', normaliseHostName(hostname())]);
      const listen = opts.listenHost.replace(/^\[|\]$/g, '');
      if (!WILDCARDS.has(listen)) names.add(normaliseHostName(listen));
      for (const h of opts.allowedHosts ?? []) {
        if (typeof h !== 'string' || !/^[A-Za-z0-9.\-_*]{1,253}$/.test(h)) throw new InvalidArgumentError(`invalid allowed host ${JSON.stringify(String(h).slice(0, 60))}: expected a host name (*.example.com for every subdomain)`);
        names.add(normaliseHostName(h));
      }
      this.names = names;
    }
    const origins = new Set<string>();
    for (const o of opts.corsOrigins ?? []) {
      let u: URL;
      try {
        u = new URL(o);
      } catch (e) {
        throw new InvalidArgumentError(`invalid CORS origin ${JSON.stringify(String(o).slice(0, 80))}: expected scheme://host[:port]`, { cause: e });
      }
      if ((u.protocol !== 'http:' && u.protocol !== 'https:') || u.pathname !== '/' || u.search || u.hash) {
        throw new InvalidArgumentError(`invalid CORS origin ${JSON.stringify(o.slice(0, 80))}: expected http(s)://host[:port] with nothing after it`);
      }
      origins.add(u.origin);
    }
    this.corsOrigins = origins;
  }

  /** The configured names (for error messages and docs). */
  describeAllowed(): string {
    return this.names === undefined ? 'any' : `IP addresses, ${[...this.names].join(', ')}, *.localhost`;
  }

  hostAllowed(host: string | undefined): boolean {
    if (this.names === undefined || host === undefined) return true;
    // Clients send the same Host on every request: remember the ones allowed (a few at most).
    if (this.seen.has(host)) return true;
    const h = hostOfHeader(host);
    if (h === undefined) return false;
    let ok = isIP(h) !== 0 || this.names.has(h) || h.endsWith('.localhost');
    for (const n of this.names) if (!ok && n.startsWith('*.') && h.endsWith(n.slice(1))) ok = true;
    if (ok && this.seen.size < 64) this.seen.add(host);
    return ok;
  }

  private readonly seen = new Set<string>();

  /** Refuse what a browser sent cross-site (see the module comment). `navigation` routes (the
   *  dashboard's pages) accept top-level navigations from elsewhere. */
  checkOrigin(req: IncomingMessage, navigation: boolean): void {
    const site = req.headers['sec-fetch-site'];
    const origin = req.headers.origin;
    if (typeof origin === 'string' && origin !== 'null' && this.corsOrigins.has(origin)) return;
    if (site === 'cross-site' || site === 'same-site') {
      if (navigation && req.method === 'GET' && req.headers['sec-fetch-mode'] === 'navigate') return;
      throw new PermissionDeniedError(`cross-site request refused (Sec-Fetch-Site: ${site}): roster's API serves its own origin only`, { details: { reason: 'cross-origin' } });
    }
    if (typeof origin === 'string' && !sameOrigin(origin, req)) {
      throw new PermissionDeniedError(`cross-origin request refused (Origin ${JSON.stringify(origin.slice(0, 80))}): roster's API serves its own origin only`, { details: { reason: 'cross-origin' } });
    }
  }

  /** A state-changing request of roster's API must prove it was not sent by a plain form. */
  checkCsrf(req: IncomingMessage): void {
    if (req.headers[CSRF_HEADER] !== undefined) return;
    const ct = req.headers['content-type'];
    if (ct !== undefined && (ct === 'application/json' || ct.split(';')[0]!.trim().toLowerCase() === 'application/json')) return;
    throw new HttpError(
      415,
      new InvalidArgumentError(`state-changing requests need Content-Type: application/json or an ${CSRF_HEADER} header, also without a body (CSRF protection)`, { details: { reason: 'csrf' } }),
    );
  }

  /** CORS headers for a reply to an allowed origin (empty when CORS is off or the origin is not allowed). */
  corsHeaders(req: IncomingMessage): string[] {
    const origin = req.headers.origin;
    if (typeof origin !== 'string' || !this.corsOrigins.has(origin)) return [];
    return ['access-control-allow-origin', origin, 'vary', 'Origin'];
  }

  /** Headers answering a CORS preflight from an allowed origin (undefined: not one). */
  preflight(req: IncomingMessage): string[] | undefined {
    const origin = req.headers.origin;
    if (req.method !== 'OPTIONS' || typeof origin !== 'string' || !this.corsOrigins.has(origin) || req.headers['access-control-request-method'] === undefined) return undefined;
    // (Access-Control-Allow-Origin and Vary are added to every reply to an allowed origin.)
    return [
      'access-control-allow-methods', 'GET, HEAD, POST, PUT, DELETE',
      'access-control-allow-headers', `authorization, content-type, last-event-id, ${CSRF_HEADER}, x-consul-token`,
      'access-control-max-age', '600',
    ];
  }
}

function sameOrigin(origin: string, req: IncomingMessage): boolean {
  const host = req.headers.host;
  if (host === undefined) return false;
  let u: URL;
  try {
    u = new URL(origin);
  } catch {
    return false;
  }
  return u.host.toLowerCase() === host.trim().toLowerCase();
}

/** Whether a listen address is loopback only (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  const h = host.replace(/^\[|\]$/g, '').toLowerCase();
  if (h === 'localhost' || h === '::1' || h === '0:0:0:0:0:0:0:1') return true;
  return isIP(h) === 4 && h.startsWith('127.');
}
