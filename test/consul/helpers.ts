/**
 * A roster server with the Consul API for client tests, logging every /v1 endpoint a client calls
 * (the issue asks for the list per client): `endpoints()` gives them normalised, ids and keys
 * replaced by placeholders, with how often each was called.
 */
import { startInProcess, type InProcessServer } from '../helpers/server.js';
import type { ServerOptions } from '../../src/server/index.js';

export interface ConsulTestServer extends InProcessServer {
  host: string;
  port: number;
  log: { method: string; path: string; query: string }[];
  /** "METHOD /v1/path?params" lines, normalised and counted. */
  endpoints(): string[];
}

const PLACEHOLDERS: [RegExp, string][] = [
  [/^(\/v1\/kv\/).+$/, '$1<key>'],
  [/^(\/v1\/agent\/service\/(?:deregister|maintenance)\/).+$/, '$1<id>'],
  [/^(\/v1\/agent\/check\/(?:pass|warn|fail|update|deregister)\/).+$/, '$1<check>'],
  [/^(\/v1\/agent\/service\/)(?!register$|deregister\/|maintenance\/).+$/, '$1<id>'],
  [/^(\/v1\/(?:health\/service|health\/checks|catalog\/service)\/).+$/, '$1<service>'],
  [/^(\/v1\/(?:catalog\/node|health\/node|session\/node)\/).+$/, '$1<node>'],
  [/^(\/v1\/session\/(?:info|renew|destroy)\/).+$/, '$1<session>'],
];

export function normaliseEndpoint(method: string, path: string, query: string): string {
  let p = path;
  for (const [re, rep] of PLACEHOLDERS) {
    if (re.test(p)) {
      p = p.replace(re, rep);
      break;
    }
  }
  const params = query === '' ? [] : [...new Set(query.split('&').map((kv) => kv.split('=')[0]!))].sort();
  return `${method} ${p}${params.length ? `?${params.join('&')}` : ''}`;
}

export async function startConsulServer(opts: Omit<ServerOptions, 'port' | 'dataDir'> = {}): Promise<ConsulTestServer> {
  const log: ConsulTestServer['log'] = [];
  const consul = opts.consul === false ? false : { nodeName: 'roster-test', ...(opts.consul ?? {}), onRequest: (method: string, path: string, query: string) => log.push({ method, path, query }) };
  const s = await startInProcess({ ...opts, consul });
  const u = new URL(s.url);
  return {
    ...s,
    host: u.hostname,
    port: Number(u.port),
    log,
    endpoints() {
      const counts = new Map<string, number>();
      for (const l of log) {
        const e = normaliseEndpoint(l.method, l.path, l.query);
        counts.set(e, (counts.get(e) ?? 0) + 1);
      }
      return [...counts].sort(([a], [b]) => (a < b ? -1 : 1)).map(([e, n]) => `${e}  x${n}`);
    },
  };
}

/** Poll-free wait: resolve when `fn` returns a truthy value, re-evaluated on each `tick` call. */
export async function eventually<T>(fn: () => Promise<T | undefined> | T | undefined, what: string, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
