/**
 * roster's DNS interface: UDP and TCP on one port (default 127.0.0.1:8600, Consul's), answering
 * from a ServicesView (./answer.ts says what). Packets are encoded and decoded by `dns-packet`.
 *
 * - UDP answers fit the client's EDNS buffer size (512 bytes without EDNS), capped at
 *   `maxUdpSize` (1232 by default, the DNS flag day 2020 size that avoids IP fragmentation). A
 *   larger answer goes out with the TC bit and as many whole answer records as fit, and no
 *   additional records; resolvers (dig included) then retry over TCP, which carries up to 64 KiB.
 * - TCP: RFC 7766 framing (2-byte length), several queries per connection, 10 s idle timeout, at
 *   most 128 connections at a time.
 * - Recursion is never offered (RA = 0); names outside the domain get REFUSED, so the server
 *   cannot be used to resolve or amplify other names.
 * - Off by default in `roster server`, and loopback-only unless `allowNonLoopback` (the DNS
 *   protocol has no authentication: anyone who can reach the port reads every healthy address,
 *   and UDP answers larger than the queries are an amplification vector).
 */
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { createServer, type Server as TcpServer, type Socket } from 'node:net';
import * as packet from 'dns-packet';
import type { Backend } from '../../contract/types.js';
import { parseDuration } from '../../core/duration.js';
import { InvalidArgumentError, UnavailableError } from '../../core/errors.js';
import type { Engine } from '../../engine/engine.js';
import { ServicesView } from '../services-view.js';
import { DnsAnswerer, type Rcode, type Resolution } from './answer.js';

export interface DnsServerOptions {
  /** Answer from this engine (the roster server's own)... */
  engine?: Engine;
  /** ...or from any backend (roster layout under `services/`). The caller keeps ownership. */
  backend?: Backend;
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 8600; 0 picks a port free for both UDP and TCP. */
  port?: number;
  /** Authoritative domain, default "roster" (names `<service>.service.roster`). */
  domain?: string;
  /** TTL of every record (and of negative answers): ms or a duration string; whole seconds on
   *  the wire. Default 5 s: a deregistered instance leaves resolvers' caches within that. */
  ttl?: number | string;
  /** Leave out instances whose health is "warning" too (default: only "critical" ones). */
  onlyPassing?: boolean;
  /** Largest UDP answer, and the EDNS buffer size advertised (512-4096, default 1232). */
  maxUdpSize?: number;
  /** Listen beyond loopback. Default false: see the module comment. */
  allowNonLoopback?: boolean;
  /** Unexpected failures (a socket error, an answer that cannot be encoded). Default: stderr. */
  onError?: (err: unknown) => void;
}

export interface DnsStats {
  udpQueries: number;
  tcpQueries: number;
  truncated: number;
  refused: number;
  nxdomain: number;
  formerr: number;
}

export interface DnsServer {
  readonly host: string;
  readonly port: number;
  readonly domain: string;
  readonly stats: Readonly<DnsStats>;
  /** Stop listening, end TCP connections, close the view. Idempotent. */
  close(): Promise<void>;
}

export const DEFAULT_DNS_PORT = 8600;
const RCODE: Record<Rcode, number> = { NOERROR: 0, FORMERR: 1, SERVFAIL: 2, NXDOMAIN: 3, NOTIMP: 4, REFUSED: 5 };
const OPCODE_QUERY = 0;
const MAX_TCP_CONNECTIONS = 128;
const TCP_IDLE_MS = 10_000;

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** Start the DNS interface; resolves once UDP and TCP listen and the view holds the registry. */
export async function startDnsServer(opts: DnsServerOptions): Promise<DnsServer> {
  if (!opts.engine === !opts.backend) throw new InvalidArgumentError('startDnsServer needs exactly one of engine or backend');
  const host = opts.host ?? '127.0.0.1';
  if (!isLoopback(host) && !opts.allowNonLoopback) {
    throw new InvalidArgumentError(`DNS on ${host} would answer anyone who can reach it (DNS has no authentication): listen on 127.0.0.1, or allow it explicitly (allowNonLoopback / --insecure)`);
  }
  const port = opts.port ?? DEFAULT_DNS_PORT;
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new InvalidArgumentError(`invalid DNS port ${String(port)}: expected 0-65535`);
  const domain = (opts.domain ?? 'roster').toLowerCase().replace(/^\.+|\.+$/g, '');
  if (!/^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$/.test(domain)) {
    throw new InvalidArgumentError(`invalid DNS domain ${JSON.stringify(opts.domain)}: expected host-name labels such as "roster" or "svc.example"`);
  }
  const ttl = Math.round(parseDuration(opts.ttl ?? 5000, 'DNS ttl', { min: 0, max: 86_400_000 }) / 1000);
  const maxUdp = opts.maxUdpSize ?? 1232;
  if (!Number.isInteger(maxUdp) || maxUdp < 512 || maxUdp > 4096) throw new InvalidArgumentError(`invalid maxUdpSize ${String(maxUdp)}: expected 512-4096`);
  const onError = opts.onError ?? ((e: unknown) => process.stderr.write(`roster dns: ${e instanceof Error ? e.message : String(e)}\n`));

  const view = opts.engine ? new ServicesView({ engine: opts.engine }) : new ServicesView({ backend: opts.backend! });
  await view.ready;
  const answerer = new DnsAnswerer(view, { domain, ttl, onlyPassing: opts.onlyPassing ?? false });
  const stats: DnsStats = { udpQueries: 0, tcpQueries: 0, truncated: 0, refused: 0, nxdomain: 0, formerr: 0 };

  /** The response to one query message, fitted to `limit` bytes (or undefined: drop it). */
  const respond = (msg: Buffer, udp: boolean): Buffer | undefined => {
    if (msg.length < 12) return undefined; // not even a header: nothing to answer
    let q: packet.DecodedPacket;
    try {
      q = packet.decode(msg);
    } catch {
      stats.formerr++;
      return header(msg.readUInt16BE(0), (msg.readUInt16BE(2) >> 11) & 0xf, 'FORMERR');
    }
    if (q.type !== 'query') return undefined; // never answer answers (reflection loops)
    const opcode = (q.flags ?? 0) >> 11 & 0xf;
    const edns = q.additionals?.find((a) => a.type === 'OPT') as { udpPayloadSize?: number } | undefined;
    const limit = udp ? Math.min(maxUdp, Math.max(512, edns?.udpPayloadSize ?? 512)) : 65535;
    let res: Resolution;
    if (opcode !== OPCODE_QUERY) res = { rcode: 'NOTIMP', authoritative: false, answers: [], authorities: [], additionals: [] };
    else if (q.questions?.length !== 1) res = { rcode: 'FORMERR', authoritative: false, answers: [], authorities: [], additionals: [] };
    else res = answerer.resolve(q.questions[0]!);
    if (res.rcode === 'REFUSED') stats.refused++;
    else if (res.rcode === 'NXDOMAIN') stats.nxdomain++;
    else if (res.rcode === 'FORMERR') stats.formerr++;
    const rd = (q.flags ?? 0) & packet.RECURSION_DESIRED;
    const base = (opcode << 11) | rd | RCODE[res.rcode] | (res.authoritative ? packet.AUTHORITATIVE_ANSWER : 0);
    const opt: packet.Answer[] = edns ? [{ type: 'OPT', name: '.', udpPayloadSize: maxUdp, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] : [];
    const out: packet.Packet = {
      type: 'response',
      id: q.id ?? 0,
      flags: base,
      questions: q.questions ?? [],
      answers: res.answers,
      authorities: res.authorities,
      additionals: [...res.additionals, ...opt],
    };
    if (packet.encodingLength(out) <= limit) return packet.encode(out);
    // Too big: TC, no additional records but OPT, as many whole answers as fit.
    stats.truncated++;
    out.flags = base | packet.TRUNCATED_RESPONSE;
    out.additionals = opt;
    out.authorities = [];
    const answers = [...res.answers];
    out.answers = answers;
    while (answers.length > 0 && packet.encodingLength(out) > limit) answers.pop();
    return packet.encode(out);
  };

  /** respond(), with an unexpected failure reported and answered SERVFAIL. */
  const reply = (msg: Buffer, udp: boolean): Buffer | undefined => {
    try {
      return respond(msg, udp);
    } catch (e) {
      onError(e);
      return msg.length >= 12 ? header(msg.readUInt16BE(0), 0, 'SERVFAIL') : undefined;
    }
  };

  const { udp, tcp, boundPort } = await bind(host, port, onError);
  udp.on('message', (msg, rinfo) => {
    stats.udpQueries++;
    const out = reply(msg, true);
    if (out) udp.send(out, rinfo.port, rinfo.address, (e) => e && onError(e));
  });

  const sockets = new Set<Socket>();
  tcp.on('connection', (sock) => {
    if (sockets.size >= MAX_TCP_CONNECTIONS) return void sock.destroy();
    sockets.add(sock);
    sock.setTimeout(TCP_IDLE_MS, () => sock.destroy());
    sock.on('close', () => sockets.delete(sock));
    sock.on('error', () => sock.destroy());
    let buf: Buffer = Buffer.alloc(0);
    sock.on('data', (chunk: Buffer) => {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (buf.length < 2 + len) break;
        const msg = buf.subarray(2, 2 + len);
        buf = buf.subarray(2 + len);
        stats.tcpQueries++;
        const out = reply(msg, false);
        if (!out) return void sock.destroy();
        const frame = Buffer.allocUnsafe(2 + out.length);
        frame.writeUInt16BE(out.length, 0);
        out.copy(frame, 2);
        sock.write(frame);
      }
    });
  });

  let closing: Promise<void> | undefined;
  return {
    host,
    port: boundPort,
    domain,
    stats,
    close() {
      closing ??= (async () => {
        for (const s of sockets) s.destroy();
        await Promise.all([new Promise<void>((r) => udp.close(() => r())), new Promise<void>((r) => tcp.close(() => r()))]);
        await view.close();
      })();
      return closing;
    },
  };
}

/** A header-only response (FORMERR / SERVFAIL) for a message that could not be answered properly. */
function header(id: number, opcode: number, rcode: Rcode): Buffer {
  const b = Buffer.alloc(12);
  b.writeUInt16BE(id, 0);
  b.writeUInt16BE(0x8000 | (opcode << 11) | RCODE[rcode], 2);
  return b;
}

/** UDP and TCP on the same port; with port 0, a port free for both (a few attempts). */
async function bind(host: string, port: number, onError: (e: unknown) => void): Promise<{ udp: UdpSocket; tcp: TcpServer; boundPort: number }> {
  let last: unknown;
  for (let attempt = 0; attempt < (port === 0 ? 8 : 1); attempt++) {
    const udp = createSocket({ type: host.includes(':') ? 'udp6' : 'udp4', reuseAddr: false });
    let boundPort: number;
    try {
      boundPort = await new Promise<number>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(port, host, () => {
          udp.off('error', reject);
          resolve(udp.address().port);
        });
      });
    } catch (e) {
      udp.close();
      last = e;
      continue;
    }
    const tcp = createServer();
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(boundPort, host, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
    } catch (e) {
      udp.close();
      last = e;
      continue;
    }
    udp.on('error', onError);
    tcp.on('error', onError);
    return { udp, tcp, boundPort };
  }
  const code = (last as NodeJS.ErrnoException | undefined)?.code;
  throw new UnavailableError(`cannot listen for DNS on ${host}:${port}: ${code ?? String(last)}`, { cause: last });
}
