import type { IncomingMessage, ServerResponse } from 'node:http';
import { InvalidArgumentError, RosterError } from '../../core/errors.js';
import { decodePath, readBody } from '../http.js';
import { parseGoDuration } from '../../core/duration.js';

export { parseGoDuration, formatGoDuration } from '../../core/duration.js';

/**
 * The wire conventions of Consul's HTTP API, as its agent (agent/http.go) and clients expect them:
 * Go durations, uint64 indexes, flag-style query parameters, case-insensitive JSON field names
 * (Go's encoding/json) with snake_case aliases (Consul's lib.TranslateKeys), and the
 * X-Consul-* headers the Go client requires on every read (it fails a read without
 * X-Consul-LastContact).
 */

/** Consul's caps: a blocking query waits at most 10 min, 5 min when no wait is given. */
export const MAX_WAIT_MS = 10 * 60_000;
export const DEFAULT_WAIT_MS = 5 * 60_000;
/** Consul adds up to wait/16 of random jitter to a blocking query's wait (structs.JitterFraction). */
export const JITTER_FRACTION = 16;

/** A duration in a JSON body: a Go duration string, or a number of nanoseconds (Go's time.Duration). */
export function bodyDuration(v: unknown, what: string): number | undefined {
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v === 'number') {
    if (!Number.isFinite(v) || v < 0) throw new InvalidArgumentError(`invalid ${what} ${v}: expected a non-negative duration`, { details: { field: what } });
    return v / 1e6;
  }
  if (typeof v !== 'string') throw new InvalidArgumentError(`invalid ${what}: expected a duration string such as "10s"`, { details: { field: what } });
  const ms = parseGoDuration(v, what);
  if (ms < 0) throw new InvalidArgumentError(`invalid ${what} ${JSON.stringify(v)}: must not be negative`, { details: { field: what } });
  return ms;
}

/** Query parameters: every value of every name (Consul repeats `tag` and `node-meta`). */
export class Query {
  private readonly map = new Map<string, string[]>();
  constructor(qs: string) {
    if (qs === '') return;
    for (const part of qs.split('&')) {
      if (part === '') continue;
      const eq = part.indexOf('=');
      const name = decode(eq < 0 ? part : part.slice(0, eq), 'query parameter name');
      const value = eq < 0 ? '' : decode(part.slice(eq + 1), `query parameter ${name.slice(0, 40)}`);
      const list = this.map.get(name);
      if (list) {
        if (list.length >= 64) throw new InvalidArgumentError(`query parameter ${JSON.stringify(name.slice(0, 40))} given too many times (at most 64)`);
        list.push(value);
      } else {
        this.map.set(name, [value]);
      }
    }
  }
  has(name: string): boolean {
    return this.map.has(name);
  }
  get(name: string): string | undefined {
    return this.map.get(name)?.[0];
  }
  all(name: string): string[] {
    return this.map.get(name) ?? [];
  }
  /** A flag parameter (`?recurse`, `?passing=1`): present and not a false boolean. */
  flag(name: string): boolean {
    const v = this.get(name);
    if (v === undefined) return false;
    if (v === '') return true;
    const b = parseGoBool(v);
    if (b === undefined) throw new InvalidArgumentError(`invalid value for ?${name}: ${JSON.stringify(v.slice(0, 40))} (expected true, false, 1 or 0)`, { details: { field: name } });
    return b;
  }
  /** A uint64 parameter as a BigInt (undefined when absent). */
  uint(name: string): bigint | undefined {
    const v = this.get(name);
    if (v === undefined) return undefined;
    return parseUint64(v, `?${name}`);
  }
}

function decode(s: string, what: string): string {
  return decodePath(s.includes('+') ? s.replace(/\+/g, ' ') : s, what);
}

/** Go's strconv.ParseBool. */
export function parseGoBool(v: string): boolean | undefined {
  switch (v) {
    case '1': case 't': case 'T': case 'true': case 'TRUE': case 'True': return true;
    case '0': case 'f': case 'F': case 'false': case 'FALSE': case 'False': return false;
    default: return undefined;
  }
}

const UINT64_MAX = (1n << 64n) - 1n;

/** A uint64 in decimal (Go's strconv.ParseUint(s, 10, 64)). */
export function parseUint64(v: string, what: string): bigint {
  if (!/^\d{1,20}$/.test(v)) throw new InvalidArgumentError(`invalid ${what} ${JSON.stringify(v.slice(0, 40))}: expected an unsigned 64-bit integer`, { details: { field: what } });
  const n = BigInt(v);
  if (n > UINT64_MAX) throw new InvalidArgumentError(`invalid ${what} ${v}: larger than 2^64-1`, { details: { field: what } });
  return n;
}

/** The blocking part of a read: `index` and `wait` (Consul's parseWait). */
export interface Blocking {
  /** 0n = not blocking. */
  index: bigint;
  /** Wait before answering unchanged, jitter included. */
  waitMs: number;
}

export function parseBlocking(q: Query): Blocking {
  const index = q.uint('index') ?? 0n;
  let wait = DEFAULT_WAIT_MS;
  const w = q.get('wait');
  if (w !== undefined && w !== '') {
    const ms = parseGoDuration(w, '?wait');
    wait = ms > MAX_WAIT_MS ? MAX_WAIT_MS : ms <= 0 ? DEFAULT_WAIT_MS : ms;
  }
  return { index, waitMs: wait + Math.random() * (wait / JITTER_FRACTION) };
}

/** Case-insensitive field access over a decoded JSON object, as Go's encoding/json matches
 *  struct fields, with snake_case accepted too (Consul translates `service_id` and friends). */
export class Fields {
  private readonly byNorm = new Map<string, string>();
  private readonly used = new Set<string>();
  constructor(
    readonly obj: Record<string, unknown>,
    readonly where: string,
  ) {
    for (const k of Object.keys(obj)) this.byNorm.set(norm(k), k);
  }
  get(...names: string[]): unknown {
    for (const n of names) {
      const k = this.byNorm.get(norm(n));
      if (k !== undefined) {
        this.used.add(k);
        return this.obj[k];
      }
    }
    return undefined;
  }
  /** Mark fields as known but ignored (Consul features roster does not implement). */
  ignore(...names: string[]): void {
    for (const n of names) {
      const k = this.byNorm.get(norm(n));
      if (k !== undefined) this.used.add(k);
    }
  }
  /** Reject any field not read or ignored: a typo fails loudly instead of being dropped. */
  done(): void {
    for (const k of Object.keys(this.obj)) {
      if (!this.used.has(k)) {
        throw new InvalidArgumentError(`unknown field ${JSON.stringify(k.slice(0, 64))} in ${this.where}`, { details: { field: k.slice(0, 64) } });
      }
    }
  }
  str(what: string, ...names: string[]): string | undefined {
    const v = this.get(...names);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'string') throw new InvalidArgumentError(`invalid ${this.where}.${what}: expected a string`, { details: { field: what } });
    return v;
  }
  bool(what: string, ...names: string[]): boolean | undefined {
    const v = this.get(...names);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'boolean') throw new InvalidArgumentError(`invalid ${this.where}.${what}: expected true or false`, { details: { field: what } });
    return v;
  }
  int(what: string, min: number, max: number, ...names: string[]): number | undefined {
    const v = this.get(...names);
    if (v === undefined || v === null) return undefined;
    if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
      throw new InvalidArgumentError(`invalid ${this.where}.${what} ${describe(v)}: expected an integer from ${min} to ${max}`, { details: { field: what } });
    }
    return v;
  }
  obj_(what: string, ...names: string[]): Fields | undefined {
    const v = this.get(...names);
    if (v === undefined || v === null) return undefined;
    return new Fields(asObject(v, `${this.where}.${what}`), `${this.where}.${what}`);
  }
  /** A map of string to string (Meta, Node meta): values must be strings. */
  stringMap(what: string, ...names: string[]): Record<string, string> | undefined {
    const v = this.get(...names);
    if (v === undefined || v === null) return undefined;
    const o = asObject(v, `${this.where}.${what}`);
    const out: Record<string, string> = {};
    for (const [k, x] of Object.entries(o)) {
      if (typeof x !== 'string') throw new InvalidArgumentError(`invalid ${this.where}.${what}[${JSON.stringify(k.slice(0, 40))}]: expected a string`, { details: { field: what } });
      out[k] = x;
    }
    return out;
  }
  strings(what: string, ...names: string[]): string[] | undefined {
    const v = this.get(...names);
    if (v === undefined || v === null) return undefined;
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
      throw new InvalidArgumentError(`invalid ${this.where}.${what}: expected an array of strings`, { details: { field: what } });
    }
    return v as string[];
  }
}

function norm(k: string): string {
  return k.replace(/[_-]/g, '').toLowerCase();
}

export function asObject(v: unknown, what: string): Record<string, unknown> {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new InvalidArgumentError(`invalid ${what}: expected a JSON object, got ${describe(v)}`, { details: { field: what } });
  }
  return v as Record<string, unknown>;
}

export function describe(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (v === null) return 'null';
  return Array.isArray(v) ? 'an array' : typeof v;
}

/** Read a JSON body of any content type (Consul ignores it; clients send none, form or JSON). */
export async function readJson(req: IncomingMessage, limit: number, optional = false): Promise<unknown> {
  const text = await readBody(req, limit);
  if (text.trim() === '') {
    if (optional) return undefined;
    throw new InvalidArgumentError('request body required: a JSON document');
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new InvalidArgumentError(`malformed JSON body: ${(e as Error).message}`, { cause: e });
  }
}

/** Read a raw body as bytes (KV values are arbitrary bytes). */
export function readRaw(req: IncomingMessage, limit: number): Promise<Buffer> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    req.resume();
    return Promise.reject(new RosterError('TOO_LARGE', `request body too large: at most ${limit} bytes`, { details: { limit } }));
  }
  return new Promise<Buffer>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on('data', (c: Buffer) => {
      if (failed) return;
      size += c.length;
      if (size > limit) {
        failed = true;
        chunks.length = 0;
        reject(new RosterError('TOO_LARGE', `request body too large: at most ${limit} bytes`, { details: { limit } }));
        req.resume();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => {
      if (!failed) resolve(Buffer.concat(chunks, size));
    });
    req.on('error', (e) => {
      if (failed) return;
      failed = true;
      reject(new InvalidArgumentError(`request body could not be read: ${e.message}`, { cause: e }));
    });
  });
}


const JSON_TYPE = 'application/json';

/**
 * Write one reply with Consul's query-meta headers, on every reply (older Go clients fail a read
 * whose X-Consul-Index or X-Consul-LastContact is missing). `index` is never below 1.
 */
export function send(res: ServerResponse, status: number, body: string | Buffer, index: number, contentType = JSON_TYPE): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, [
    'content-type', contentType,
    'content-length', String(Buffer.byteLength(body)),
    'cache-control', 'no-store',
    'x-consul-index', String(Math.max(1, index)),
    'x-consul-knownleader', 'true',
    'x-consul-lastcontact', '0',
  ]);
  res.end(body);
}
