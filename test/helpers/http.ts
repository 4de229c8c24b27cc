/**
 * Exact HTTP requests for protocol tests: node:http with a fresh connection per request (so a
 * request that makes the server close its connection cannot affect the next), and a raw TCP
 * variant for bytes no HTTP client would send.
 */
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http';
import { connect } from 'node:net';

export interface Reply {
  status: number;
  headers: IncomingHttpHeaders;
  text: string;
  json: unknown;
}

export interface RequestOptions {
  headers?: Record<string, string>;
  body?: string | Buffer;
  /** Send the body in pieces without Content-Length (chunked transfer encoding). */
  chunked?: boolean;
  timeoutMs?: number;
}

function parse(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined; // not JSON: callers assert on `json` being defined
  }
}

export function request(base: string, method: string, path: string, opts: RequestOptions = {}): Promise<Reply> {
  const u = new URL(base);
  return new Promise<Reply>((resolve, reject) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.body !== undefined && !opts.chunked && headers['content-length'] === undefined) headers['content-length'] = String(Buffer.byteLength(opts.body));
    const req = httpRequest({ host: u.hostname, port: Number(u.port), method, path, headers, agent: false });
    let gotResponse = false;
    const t = setTimeout(() => {
      req.destroy(new Error(`${method} ${path} timed out`));
    }, opts.timeoutMs ?? 10_000);
    req.on('response', (res) => {
      gotResponse = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        clearTimeout(t);
        const text = Buffer.concat(chunks).toString('utf8');
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json: parse(text) });
      });
      res.on('error', (e) => {
        clearTimeout(t);
        reject(e);
      });
    });
    req.on('error', (e) => {
      // After the server answered (e.g. 413 then close), a write error on the rest of the body is expected.
      if (gotResponse) return;
      clearTimeout(t);
      reject(e);
    });
    if (opts.body !== undefined) {
      const buf = typeof opts.body === 'string' ? Buffer.from(opts.body) : opts.body;
      if (opts.chunked) {
        for (let i = 0; i < buf.length; i += 64 * 1024) req.write(buf.subarray(i, i + 64 * 1024));
      } else {
        req.write(buf);
      }
    }
    req.end();
  });
}

/** Send raw bytes on a new TCP connection; resolve with the parsed status line and body. */
export function rawRequest(base: string, bytes: string | Buffer, timeoutMs = 10_000): Promise<Reply> {
  const u = new URL(base);
  return new Promise<Reply>((resolve, reject) => {
    const sock = connect(Number(u.port), u.hostname);
    const chunks: Buffer[] = [];
    const t = setTimeout(() => sock.destroy(new Error('raw request timed out')), timeoutMs);
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', (e) => {
      clearTimeout(t);
      if (chunks.length === 0) reject(e);
    });
    sock.on('close', () => {
      clearTimeout(t);
      const all = Buffer.concat(chunks).toString('utf8');
      const m = /^HTTP\/1\.1 (\d{3})/.exec(all);
      const sep = all.indexOf('\r\n\r\n');
      const head = sep < 0 ? all : all.slice(0, sep);
      const headers: IncomingHttpHeaders = {};
      for (const line of head.split('\r\n').slice(1)) {
        const i = line.indexOf(':');
        if (i > 0) headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
      }
      const text = sep < 0 ? '' : all.slice(sep + 4);
      resolve({ status: m ? Number(m[1]) : 0, headers, text, json: parse(text) });
    });
    sock.write(bytes);
    // Half-close is not used: some errors make the server close first, others need a full request.
  });
}
