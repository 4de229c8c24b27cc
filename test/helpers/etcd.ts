/**
 * A real etcd for tests: one single-member cluster on free loopback ports (client + peer) with a
 * temporary data dir, started from the Debian binary (/usr/bin/etcd, override with $ETCD_BIN).
 * `kill()` is a kill -9; `start()` brings it back on the same ports and data dir; `stop()` kills
 * it and removes the data dir. Also a tiny TCP proxy (`startProxy`) that tests pause or cut to
 * simulate network faults between a client and etcd.
 *
 * Shared by every etcd-backed test file (backend, registry, recipes, benchmarks):
 *
 *   const etcd = await startEtcd();
 *   const b = await EtcdBackend.open(etcd.url('/'));   // etcd://127.0.0.1:<port>/
 *   ...
 *   await etcd.stop();
 *
 * Heartbeat 10 ms / election 100 ms make etcd's minimum lease TTL 1 s (it is
 * ceil(1.5 × election ticks × heartbeat)), so session tests can use short TTLs.
 */
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import https from 'node:https';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

export const ETCD_BIN = process.env.ETCD_BIN ?? '/usr/bin/etcd';
export const ETCDCTL_BIN = process.env.ETCDCTL_BIN ?? '/usr/bin/etcdctl';

/** A free TCP port on 127.0.0.1 (bound then released; etcd binds it right after). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

export interface EtcdOptions {
  /** Extra etcd flags. */
  args?: string[];
  /** Serve clients over TLS (https) with these PEM files; with `clientCa`, require client certs. */
  tls?: TlsFiles;
  /** How long start() waits for /health (ms). */
  startTimeout?: number;
}

export interface TlsFiles {
  /** CA that signed the server (and client) certificates. */
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** Require client certificates signed by `ca`. */
  clientCertAuth?: boolean;
}

/** Generate a throwaway CA, a server certificate for 127.0.0.1 and a client certificate (openssl). */
export async function generateTls(dir: string): Promise<TlsFiles> {
  const f = (n: string) => path.join(dir, n);
  const ssl = (...args: string[]) => execFileP('openssl', args, { timeout: 30_000 });
  await ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=roster-test-ca', '-keyout', f('ca.key'), '-out', f('ca.pem'));
  await writeFile(f('server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await writeFile(f('client.ext'), 'extendedKeyUsage=clientAuth\n');
  for (const [name, cn] of [['server', '127.0.0.1'], ['client', 'root']] as const) {
    await ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', `/CN=${cn}`, '-keyout', f(`${name}.key`), '-out', f(`${name}.csr`));
    await ssl('x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.pem'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f(`${name}.ext`), '-out', f(`${name}.pem`));
  }
  return { ca: f('ca.pem'), serverCert: f('server.pem'), serverKey: f('server.key'), clientCert: f('client.pem'), clientKey: f('client.key') };
}

export interface EtcdServer {
  readonly clientPort: number;
  readonly peerPort: number;
  /** `127.0.0.1:<clientPort>` */
  readonly endpoint: string;
  readonly dataDir: string;
  /** Extra etcdctl flags for every etcdctl() call (e.g. `--user=root:pw`). */
  readonly ctlArgs: string[];
  /** roster backend URL: `url('/')` → `etcd://127.0.0.1:<port>/` (`etcds://` with TLS), `url('/roster')`, `url('')`. */
  url(prefix?: string): string;
  /** Running? */
  readonly running: boolean;
  /** Start (again) on the same ports and data dir; resolves once /health answers. */
  start(): Promise<void>;
  /** kill -9; resolves once the process is gone. */
  kill(): Promise<void>;
  /** kill -9 then start. */
  restart(): Promise<void>;
  /** Run etcdctl against this server; resolves with stdout. */
  etcdctl(...args: string[]): Promise<string>;
  /** Current store revision. */
  revision(): Promise<number>;
  /** Compact history up to the current revision (physically), so older revisions are gone. */
  compact(): Promise<number>;
  /** kill -9 and remove the data dir. Idempotent. */
  stop(): Promise<void>;
  /** etcd's own log output (last 64 KiB), for failure messages. */
  log(): string;
}

export async function startEtcd(opts: EtcdOptions = {}): Promise<EtcdServer> {
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'roster-etcd-'));
  // A port taken between freePort() and etcd's bind makes etcd exit: pick new ports and retry.
  let lastErr: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const server = new Etcd(await freePort(), await freePort(), dataDir, opts);
    try {
      await server.start();
      return server;
    } catch (e) {
      lastErr = e;
      await server.kill();
      if (!/address already in use/i.test(server.log())) break;
    }
  }
  await rm(dataDir, { recursive: true, force: true });
  throw lastErr;
}

class Etcd implements EtcdServer {
  private proc: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  private output = '';
  private stopped = false;
  readonly ctlArgs: string[] = [];

  constructor(
    readonly clientPort: number,
    readonly peerPort: number,
    readonly dataDir: string,
    private readonly opts: EtcdOptions,
  ) {}

  get endpoint(): string {
    return `127.0.0.1:${this.clientPort}`;
  }
  get running(): boolean {
    return this.proc !== undefined;
  }
  url(prefix = '/'): string {
    return `${this.opts.tls ? 'etcds' : 'etcd'}://${this.endpoint}${prefix}`;
  }
  log(): string {
    return this.output;
  }

  async start(): Promise<void> {
    if (this.stopped) throw new Error('etcd test server was stopped');
    if (this.proc) return;
    const tls = this.opts.tls;
    const client = `${tls ? 'https' : 'http'}://127.0.0.1:${this.clientPort}`;
    const tlsArgs = tls
      ? ['--cert-file', tls.serverCert, '--key-file', tls.serverKey, ...(tls.clientCertAuth ? ['--client-cert-auth', '--trusted-ca-file', tls.ca] : [])]
      : [];
    const peer = `http://127.0.0.1:${this.peerPort}`;
    const name = 'roster-test';
    const proc = spawn(
      ETCD_BIN,
      [
        '--name', name,
        '--data-dir', this.dataDir,
        '--listen-client-urls', client,
        '--advertise-client-urls', client,
        '--listen-peer-urls', peer,
        '--initial-advertise-peer-urls', peer,
        '--initial-cluster', `${name}=${peer}`,
        '--initial-cluster-state', 'new',
        '--heartbeat-interval', '10',
        '--election-timeout', '100',
        '--logger', 'zap',
        '--log-level', 'warn',
        ...tlsArgs,
        ...(this.opts.args ?? []),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.proc = proc;
    const onData = (d: Buffer) => {
      this.output = (this.output + d.toString()).slice(-65536);
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    this.exited = new Promise((resolve) => {
      proc.once('exit', () => {
        if (this.proc === proc) this.proc = undefined;
        resolve();
      });
      proc.once('error', (e) => {
        this.output += `\nspawn error: ${String(e)}`;
        if (this.proc === proc) this.proc = undefined;
        resolve();
      });
    });
    const deadline = Date.now() + (this.opts.startTimeout ?? 15_000);
    for (;;) {
      if (this.proc !== proc) throw new Error(`etcd exited during start:\n${this.output.slice(-2000)}`);
      if (await this.healthy(client)) return;
      if (Date.now() > deadline) {
        await this.kill();
        throw new Error(`etcd not healthy after ${this.opts.startTimeout ?? 15_000} ms:\n${this.output.slice(-2000)}`);
      }
      await new Promise((r) => setTimeout(r, 25));
    }
  }

  private async healthy(base: string): Promise<boolean> {
    try {
      const tls = this.opts.tls;
      if (!tls) {
        const res = await fetch(`${base}/health`, { signal: AbortSignal.timeout(1000) });
        return res.ok && ((await res.json()) as { health?: string }).health === 'true';
      }
      const body = await new Promise<string>((resolve, reject) => {
        const req = https.get(
          `${base}/health`,
          { ca: readFileSync(tls.ca), cert: readFileSync(tls.clientCert), key: readFileSync(tls.clientKey), timeout: 1000 },
          (res) => {
            let data = '';
            res.on('data', (d: Buffer) => (data += d.toString()));
            res.on('end', () => resolve(data));
            res.on('error', reject);
          },
        );
        req.on('error', reject);
        req.on('timeout', () => req.destroy(new Error('timeout')));
      });
      return (JSON.parse(body) as { health?: string }).health === 'true';
    } catch {
      return false; // not listening yet: the caller polls again
    }
  }

  async kill(): Promise<void> {
    const proc = this.proc;
    if (!proc) return;
    proc.kill('SIGKILL');
    await this.exited;
  }

  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }

  async etcdctl(...args: string[]): Promise<string> {
    const tls = this.opts.tls;
    const tlsArgs = tls ? [`--cacert=${tls.ca}`, `--cert=${tls.clientCert}`, `--key=${tls.clientKey}`] : [];
    const { stdout } = await execFileP(ETCDCTL_BIN, [`--endpoints=${tls ? 'https' : 'http'}://${this.endpoint}`, '--dial-timeout=3s', '--command-timeout=10s', ...tlsArgs, ...this.ctlArgs, ...args], {
      env: { ...process.env, ETCDCTL_API: '3' },
      timeout: 15_000,
    });
    return stdout;
  }

  async revision(): Promise<number> {
    const out = await this.etcdctl('endpoint', 'status', '-w', 'json');
    const status = JSON.parse(out) as { Status: { header: { revision: number } } }[];
    return Number(status[0]!.Status.header.revision);
  }

  async compact(): Promise<number> {
    const rev = await this.revision();
    await this.etcdctl('compact', '--physical', String(rev));
    return rev;
  }

  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    await this.kill();
    await rm(this.dataDir, { recursive: true, force: true });
  }
}

/**
 * A TCP proxy on a free loopback port forwarding to `target` (`host:port`). `block()` destroys
 * every open connection and refuses new ones until `unblock()` (a network cut the client sees at
 * once); `pause()` keeps connections open but stops forwarding bytes until `resume()` (a silent
 * partition, detected only by timeouts).
 */
export interface TcpProxy {
  readonly port: number;
  readonly endpoint: string;
  readonly connections: number;
  block(): void;
  unblock(): void;
  pause(): void;
  resume(): void;
  close(): Promise<void>;
}

export async function startProxy(target: string): Promise<TcpProxy> {
  const i = target.lastIndexOf(':');
  const host = target.slice(0, i);
  const targetPort = Number(target.slice(i + 1));
  const pairs = new Set<{ a: net.Socket; b: net.Socket }>();
  let blocked = false;
  let paused = false;

  const server = net.createServer((a) => {
    if (blocked) return void a.destroy();
    const b = net.connect(targetPort, host);
    const pair = { a, b };
    pairs.add(pair);
    const drop = () => {
      pairs.delete(pair);
      a.destroy();
      b.destroy();
    };
    a.on('error', drop).on('close', drop);
    b.on('error', drop).on('close', drop);
    if (paused) {
      a.pause();
      b.pause();
    } else {
      a.pipe(b);
      b.pipe(a);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    endpoint: `127.0.0.1:${port}`,
    get connections() {
      return pairs.size;
    },
    block() {
      blocked = true;
      for (const p of [...pairs]) {
        p.a.destroy();
        p.b.destroy();
      }
      pairs.clear();
    },
    unblock() {
      blocked = false;
    },
    pause() {
      paused = true;
      for (const p of pairs) {
        p.a.unpipe(p.b);
        p.b.unpipe(p.a);
        p.a.pause();
        p.b.pause();
      }
    },
    resume() {
      paused = false;
      for (const p of pairs) {
        p.a.pipe(p.b);
        p.b.pipe(p.a);
      }
    },
    async close() {
      for (const p of [...pairs]) {
        p.a.destroy();
        p.b.destroy();
      }
      pairs.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
