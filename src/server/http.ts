import type { IncomingMessage } from 'node:http';
import { InvalidArgumentError, RosterError, TooLargeError } from '../core/errors.js';

/**
 * Request parsing for the API: strict by design. Bodies must be `application/json` (UTF-8), valid
 * UTF-8, one JSON object, with no unknown fields; query strings may carry only the parameters a
 * route knows, each at most once. Every failure is a RosterError the server turns into a 4xx.
 */

/** Marks an error whose HTTP status differs from its code's default (e.g. 415 for a content type). */
export class HttpError extends RosterError {
  constructor(
    readonly httpStatus: number,
    base: RosterError,
  ) {
    super(base.code, base.message, { cause: base.cause, ...(base.details ? { details: base.details } : {}) });
  }
  override get status(): number {
    return this.httpStatus;
  }
}

const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: false });

function checkContentType(req: IncomingMessage): void {
  const ct = req.headers['content-type'];
  if (ct === 'application/json') return; // the common case, without parsing
  if (ct === undefined) {
    throw new HttpError(415, new InvalidArgumentError('missing Content-Type: send the body as application/json'));
  }
  // "application/json", optionally with parameters; only charset=utf-8 is accepted.
  const semi = ct.indexOf(';');
  const type = (semi < 0 ? ct : ct.slice(0, semi)).trim().toLowerCase();
  if (type !== 'application/json') {
    throw new HttpError(415, new InvalidArgumentError(`unsupported Content-Type ${JSON.stringify(ct.slice(0, 100))}: send the body as application/json`));
  }
  if (semi >= 0) {
    for (const param of ct.slice(semi + 1).split(';')) {
      const eq = param.indexOf('=');
      const name = param.slice(0, eq < 0 ? undefined : eq).trim().toLowerCase();
      const value = eq < 0 ? '' : param.slice(eq + 1).trim().replace(/^"|"$/g, '').toLowerCase();
      if (name === 'charset' && value !== 'utf-8' && value !== 'utf8') {
        throw new HttpError(415, new InvalidArgumentError(`unsupported charset ${JSON.stringify(value.slice(0, 40))}: bodies are UTF-8`));
      }
    }
  }
}

/**
 * Read the whole body as a string, at most `limit` bytes. Over the limit: TooLargeError (413), and
 * the rest of the body is discarded rather than buffered. An empty body yields ''.
 */
export function readBody(req: IncomingMessage, limit: number): Promise<string> {
  const declared = req.headers['content-length'];
  if (declared !== undefined && Number(declared) > limit) {
    req.resume(); // discard; the response asks the client to close the connection
    return Promise.reject(tooLarge(limit));
  }
  return new Promise<string>((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    const onData = (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > limit) {
        failed = true;
        chunks.length = 0;
        reject(tooLarge(limit));
        return;
      }
      chunks.push(chunk);
    };
    const onEnd = () => {
      cleanup();
      if (failed) return;
      if (size === 0) return resolve('');
      try {
        resolve(utf8.decode(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, size)));
      } catch (e) {
        reject(new InvalidArgumentError('request body is not valid UTF-8', { cause: e }));
      }
    };
    const onError = (e: Error) => {
      cleanup();
      if (!failed) reject(new InvalidArgumentError(`request body could not be read: ${e.message}`, { cause: e }));
      failed = true;
    };
    const cleanup = () => {
      req.off('data', onData);
      req.off('end', onEnd);
      req.off('error', onError);
      if (failed) req.resume();
    };
    req.on('data', onData);
    req.on('end', onEnd);
    req.on('error', onError);
  });
}

function tooLarge(limit: number): TooLargeError {
  return new TooLargeError(`request body too large: at most ${limit} bytes`, { details: { limit } });
}

export type JsonObject = Record<string, unknown>;

/**
 * Read a JSON object body. `fields` lists the accepted properties; anything else is rejected so a
 * typo ("sesion") fails loudly instead of being ignored. `optional` allows an empty body ({}).
 */
export async function readJsonObject(req: IncomingMessage, limit: number, fields: readonly string[], optional = false): Promise<JsonObject> {
  const hasBody = req.headers['content-length'] !== undefined ? req.headers['content-length'] !== '0' : req.headers['transfer-encoding'] !== undefined;
  if (!hasBody) {
    if (optional) return {};
    throw new InvalidArgumentError('request body required: a JSON object');
  }
  checkContentType(req);
  const text = await readBody(req, limit);
  if (text === '') {
    if (optional) return {};
    throw new InvalidArgumentError('request body required: a JSON object');
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new InvalidArgumentError(`malformed JSON body: ${(e as Error).message}`, { cause: e });
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) {
    throw new InvalidArgumentError(`request body must be a JSON object, got ${v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v}`);
  }
  for (const k in v) {
    if (!fields.includes(k)) {
      throw new InvalidArgumentError(`unknown field ${JSON.stringify(k.slice(0, 64))} in request body: expected ${fields.length ? fields.join(', ') : 'no fields'}`, {
        details: { field: k.slice(0, 64) },
      });
    }
  }
  return v as JsonObject;
}

/**
 * Parse a query string ('' or 'a=1&b=2', without '?') into an object of strings. Only `allowed`
 * names; each at most once; '+' is a space; malformed percent-encoding is an error.
 */
const NO_QUERY: Record<string, string> = Object.freeze(Object.create(null) as Record<string, string>);

export function parseQuery(qs: string, allowed: readonly string[]): Record<string, string> {
  if (qs === '') return NO_QUERY;
  const out: Record<string, string> = Object.create(null) as Record<string, string>;
  let start = 0;
  while (start <= qs.length) {
    let end = qs.indexOf('&', start);
    if (end < 0) end = qs.length;
    if (end > start) {
      const part = qs.slice(start, end);
      const eq = part.indexOf('=');
      const name = decodeComponent(eq < 0 ? part : part.slice(0, eq), 'query parameter name');
      const value = eq < 0 ? '' : decodeComponent(part.slice(eq + 1), `query parameter ${name}`);
      if (!allowed.includes(name)) {
        throw new InvalidArgumentError(
          `unknown query parameter ${JSON.stringify(name.slice(0, 64))}: expected ${allowed.length ? allowed.join(', ') : 'none'}`,
        );
      }
      if (name in out) throw new InvalidArgumentError(`query parameter ${JSON.stringify(name)} given more than once`);
      out[name] = value;
    }
    start = end + 1;
  }
  return out;
}

function decodeComponent(s: string, what: string): string {
  const plus = s.includes('+') ? s.replace(/\+/g, ' ') : s;
  if (!plus.includes('%')) return plus;
  try {
    return decodeURIComponent(plus);
  } catch (e) {
    throw new InvalidArgumentError(`malformed percent-encoding in ${what}`, { cause: e });
  }
}

/** Percent-decode a path remainder (no '+' rule in paths). */
export function decodePath(s: string, what: string): string {
  if (!s.includes('%')) return s;
  try {
    return decodeURIComponent(s);
  } catch (e) {
    throw new InvalidArgumentError(`malformed percent-encoding in ${what}`, { cause: e });
  }
}

/** A non-negative integer revision / version from a query string or header. */
export function parseNonNegativeInt(s: string, what: string): number {
  if (s.length === 0 || s.length > 15 || !/^\d+$/.test(s)) {
    throw new InvalidArgumentError(`invalid ${what} ${JSON.stringify(s.slice(0, 40))}: expected a non-negative integer`, { details: { field: what } });
  }
  return Number(s);
}

/** A non-negative safe integer from a JSON body. */
export function jsonNonNegativeInt(v: unknown, what: string): number {
  if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) {
    throw new InvalidArgumentError(`invalid ${what} ${describeValue(v)}: expected a non-negative integer`, { details: { field: what } });
  }
  return v;
}

/** A short, safe rendering of an untrusted value for error messages. */
export function describeValue(v: unknown): string {
  if (typeof v === 'string') return JSON.stringify(v.length > 40 ? v.slice(0, 40) + '…' : v);
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  if (v === null) return 'null';
  return Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'an object' : typeof v;
}
