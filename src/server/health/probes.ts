import { Agent as HttpAgent, request as httpRequest, type IncomingMessage, type RequestOptions } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { connect } from 'node:net';
import { parseHostPort } from '../../core/names.js';
import type { CheckDefinition, HealthStatus } from '../../core/checks.js';

/** The outcome of one probe: its status and a short human-readable output (Consul's `Output`). */
export interface ProbeResult {
  status: HealthStatus;
  output: string;
}

interface Prepared {
  options: RequestOptions;
  send: typeof httpRequest;
  what: string;
}

/** Bytes of a probed response body kept as output (Consul keeps 4 KiB). */
const OUTPUT_MAX = 4096;

/**
 * HTTP and TCP probes, as Consul's agent runs them: an HTTP check is passing on 2xx, warning on
 * 429 (Too Many Requests), critical otherwise or on any error or timeout; a TCP check is passing
 * once the connection is established. Connections to check targets are kept alive between probes
 * (Consul opens a new one per probe): at a 1 s interval over 1,000 targets that is the difference
 * between 1,000 TCP handshakes a second and none.
 */
export class Prober {
  // Up to 32 connections per target host (many instances often share one host), all kept open
  // between probes: a smaller free pool than the busy one makes the agent close and reopen
  // connections at every burst. The checker's own concurrency bound caps the total.
  private readonly httpAgent = new HttpAgent({ keepAlive: true, maxSockets: 32, maxFreeSockets: 32, scheduling: 'lifo', timeout: 60_000 });
  private readonly httpsAgent = new HttpsAgent({ keepAlive: true, maxSockets: 32, maxFreeSockets: 32, scheduling: 'lifo', timeout: 60_000 });
  private readonly insecureAgent = new HttpsAgent({ keepAlive: true, maxSockets: 32, maxFreeSockets: 32, scheduling: 'lifo', timeout: 60_000, rejectUnauthorized: false });
  /** Request options per check definition, built once (definitions are immutable). */
  private readonly prepared = new WeakMap<CheckDefinition, Prepared>();

  probe(def: CheckDefinition, timeoutMs: number): Promise<ProbeResult> {
    if (def.http !== undefined) return this.http(def, timeoutMs);
    if (def.tcp !== undefined) return tcp(def.tcp, timeoutMs);
    return Promise.resolve({ status: 'critical', output: 'not a probed check' });
  }

  close(): void {
    this.httpAgent.destroy();
    this.httpsAgent.destroy();
    this.insecureAgent.destroy();
  }

  private prepare(def: CheckDefinition): Prepared {
    let p = this.prepared.get(def);
    if (p) return p;
    const url = new URL(def.http!);
    const method = def.method ?? 'GET';
    const headers: Record<string, string | string[]> = { 'user-agent': 'Consul Health Check', accept: 'text/plain, text/*, */*' };
    for (const [k, v] of Object.entries(def.header ?? {})) headers[k.toLowerCase()] = [...v];
    const secure = url.protocol === 'https:';
    p = {
      options: {
        protocol: url.protocol,
        hostname: url.hostname.startsWith('[') ? url.hostname.slice(1, -1) : url.hostname,
        port: url.port || (secure ? 443 : 80),
        path: url.pathname + url.search,
        method,
        headers,
        agent: secure ? (def.tlsSkipVerify ? this.insecureAgent : this.httpsAgent) : this.httpAgent,
      },
      send: secure ? httpsRequest : httpRequest,
      what: `HTTP ${method} ${def.http}`,
    };
    this.prepared.set(def, p);
    return p;
  }

  private http(def: CheckDefinition, timeoutMs: number): Promise<ProbeResult> {
    const { options, send, what } = this.prepare(def);
    return new Promise<ProbeResult>((resolve) => {
      let settled = false;
      const finish = (r: ProbeResult) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        resolve(r);
      };
      const req = send(options, (res: IncomingMessage) => {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          if (size < OUTPUT_MAX) chunks.push(c);
          size += c.length;
        });
        res.on('error', (e) => finish({ status: 'critical', output: `${what}: ${e.message}` }));
        res.on('end', () => {
          const code = res.statusCode ?? 0;
          const body = Buffer.concat(chunks).subarray(0, OUTPUT_MAX).toString('utf8');
          const line = `${what}: ${code} ${res.statusMessage ?? ''} Output: ${body}`;
          finish({ status: code >= 200 && code < 300 ? 'passing' : code === 429 ? 'warning' : 'critical', output: line });
        });
      });
      const timer = setTimeout(() => {
        req.destroy();
        finish({ status: 'critical', output: `${what}: timed out after ${timeoutMs} ms` });
      }, timeoutMs);
      req.on('error', (e: NodeJS.ErrnoException) => finish({ status: 'critical', output: `${what}: ${e.code ?? e.message}` }));
      req.end(def.body);
    });
  }
}

function tcp(target: string, timeoutMs: number): Promise<ProbeResult> {
  const { address, port } = parseHostPort(target);
  return new Promise<ProbeResult>((resolve) => {
    let settled = false;
    const sock = connect({ host: address, port: port! });
    const finish = (r: ProbeResult) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      sock.destroy();
      resolve(r);
    };
    const timer = setTimeout(() => finish({ status: 'critical', output: `TCP connect ${target}: timed out after ${timeoutMs} ms` }), timeoutMs);
    sock.once('connect', () => finish({ status: 'passing', output: `TCP connect ${target}: Success` }));
    sock.once('error', (e: NodeJS.ErrnoException) => finish({ status: 'critical', output: `TCP connect ${target}: ${e.code ?? e.message}` }));
  });
}
