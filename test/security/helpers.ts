/**
 * A roster server with auth on and a small world of tokens, for the security tests: real HTTP, the
 * real token store in the engine, tokens made through the admin API like an operator would.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { fileURLToPath } from 'node:url';
import { Engine } from '../../src/engine/engine.js';
import { launchServer, type InternalServerOptions, type RosterServer } from '../../src/server/server.js';
import type { AuditEntry } from '../../src/server/auth/audit.js';

export const UI_DIR = fileURLToPath(new URL('../../ui/', import.meta.url));
export const BOOTSTRAP = 'battery-bootstrap-token-0123456789abcdefghijklmnop';
export const NODE = 'n1';

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  json: unknown;
}

/** One request on a fresh connection. An event stream resolves at its headers (then is cut). */
export function call(base: string, method: string, path: string, opts: { headers?: Record<string, string>; body?: string | Buffer; timeoutMs?: number } = {}): Promise<Reply> {
  const u = new URL(base);
  return new Promise<Reply>((resolve, reject) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.body !== undefined) headers['content-length'] = String(Buffer.byteLength(opts.body));
    const req = httpRequest({ host: u.hostname, port: Number(u.port), method, path, headers, agent: false });
    const t = setTimeout(() => req.destroy(new Error(`${method} ${path} timed out`)), opts.timeoutMs ?? 10_000);
    req.on('response', (res) => {
      if (String(res.headers['content-type']).startsWith('text/event-stream')) {
        clearTimeout(t);
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text: '', json: undefined });
        req.destroy();
        return;
      }
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(t);
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
    });
    req.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    if (opts.body !== undefined) req.write(opts.body);
    req.end();
  });
}

export const JSON_H = { 'content-type': 'application/json' };
export const bearer = (token: string | undefined): Record<string, string> => (token === undefined ? {} : { authorization: `Bearer ${token}` });

export type Role = 'anon' | 'reader' | 'svc' | 'writer' | 'operator' | 'admin';
export const ROLES: readonly Role[] = ['anon', 'reader', 'svc', 'writer', 'operator', 'admin'];

export interface World {
  server: RosterServer;
  engine: Engine;
  url: string;
  tokens: Record<Role, string | undefined>;
  /** A second token with svc's policy (another instance of the same service). */
  svc2: string;
  accessors: Record<string, string>;
  audit: AuditEntry[];
  /** As the admin: a JSON request that must succeed. */
  admin(method: string, path: string, body?: unknown): Promise<unknown>;
  as(role: Role | string, method: string, path: string, body?: unknown, headers?: Record<string, string>): Promise<Reply>;
  close(): Promise<void>;
}

/** The policies of the world (see the battery for what each role may do). */
export const POLICIES: Record<string, { rules: unknown[] }> = {
  'read-all': { rules: [{ key: '', access: 'read' }] },
  'orders-svc': {
    rules: [
      { service: 'orders', access: 'register' },
      { service: '*', access: 'read' },
      { key: 'locks/orders/', access: 'register' },
      { key: 'consul/kv/orders/', access: 'write' },
    ],
  },
  'write-all': { rules: [{ key: '', access: 'write' }] },
  ops: { rules: [{ operator: 'read' }] },
};

export async function secureWorld(opts: Omit<InternalServerOptions, 'port' | 'engine' | 'auth'> & { authExtra?: Record<string, unknown> } = {}): Promise<World> {
  const engine = await Engine.open();
  const audit: AuditEntry[] = [];
  const { authExtra, ...rest } = opts;
  const server = await launchServer({ consul: { nodeName: NODE }, uiDir: UI_DIR, ...rest, port: 0, engine, auth: { bootstrapToken: BOOTSTRAP, audit: (e) => audit.push(e), ...authExtra } });
  const url = server.url;
  const admin = async (method: string, path: string, body?: unknown) => {
    const r = await call(url, method, path, { headers: { ...JSON_H, ...bearer(BOOTSTRAP) }, ...(body !== undefined ? { body: JSON.stringify(body) } : {}) });
    if (r.status >= 300) throw new Error(`admin ${method} ${path}: HTTP ${r.status} ${r.text}`);
    return r.json;
  };
  for (const [name, p] of Object.entries(POLICIES)) await admin('PUT', `/api/v1/acl/policies/${name}`, p);
  const accessors: Record<string, string> = {};
  const make = async (name: string, policies: string[]) => {
    const t = (await admin('POST', '/api/v1/acl/tokens', { name, policies })) as { token: string; accessor: string };
    accessors[name] = t.accessor;
    return t.token;
  };
  const tokens: Record<Role, string | undefined> = {
    anon: undefined,
    reader: await make('reader', ['read-all']),
    svc: await make('svc', ['orders-svc']),
    writer: await make('writer', ['write-all']),
    operator: await make('operator', ['ops']),
    admin: BOOTSTRAP,
  };
  const svc2 = await make('svc2', ['orders-svc']);
  const as = (role: Role | string, method: string, path: string, body?: unknown, headers: Record<string, string> = {}) => {
    const token = role in tokens ? tokens[role as Role] : role;
    return call(url, method, path, { headers: { ...JSON_H, ...bearer(token), ...headers }, ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}) });
  };
  return {
    server,
    engine,
    url,
    tokens,
    svc2,
    accessors,
    audit,
    admin,
    as,
    close: async () => {
      await server.close();
      await engine.close();
    },
  };
}
