/**
 * A real etcd for tests: one single-member cluster on free loopback ports (client + peer) with a
 * temporary data dir, started from the Debian binary (/usr/bin/etcd, override with $ETCD_BIN).
 * `kill()` is a kill -9; `start()` brings it back on the same ports and data dir; `stop()` kills
 * it and removes the data dir. Also a tiny TCP proxy (`startProxy`) that tests pause or cut to
 * simulate network faults between a client and etcd.
 *
 * Shared by every etcd-backed test file (backend, registry, recipes). The process handling is the
 * published cluster fixture's (src/testing/cluster/etcd-cluster.ts) with one member:
 *
 *   const etcd = await startEtcd();
 *   const b = await EtcdBackend.open(etcd.url('/'));   // etcd://127.0.0.1:<port>/
 *   ...
 *   await etcd.stop();
 *
 * Heartbeat 10 ms / election 100 ms make etcd's minimum lease TTL 1 s (it is
 * ceil(1.5 × election ticks × heartbeat)), so session tests can use short TTLs.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { EtcdCluster, type EtcdTlsFiles } from '../../src/testing/cluster/etcd-cluster.js';
import { TcpProxy as FixtureProxy } from '../../src/testing/cluster/proxy.js';

export { freePort } from '../../src/testing/cluster/processes.js';
export { ETCD_BIN, ETCDCTL_BIN } from '../../src/testing/cluster/etcd-cluster.js';

const execFileP = promisify(execFile);

export interface EtcdOptions {
  /** Extra etcd flags. */
  args?: string[];
  /** Serve clients over TLS (https) with these PEM files; with `clientCa`, require client certs. */
  tls?: TlsFiles;
  /** How long start() waits for /health (ms). */
  startTimeout?: number;
}

export type TlsFiles = EtcdTlsFiles;

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

/** A one-member cluster of the published fixture (src/testing/cluster), without a proxy. */
export async function startEtcd(opts: EtcdOptions = {}): Promise<EtcdServer> {
  const cluster = await EtcdCluster.start({
    size: 1,
    heartbeatMs: 10,
    electionMs: 100,
    proxies: false,
    ...(opts.tls ? { tls: opts.tls } : {}),
    ...(opts.args ? { args: opts.args } : {}),
    ...(opts.startTimeout ? { startTimeoutMs: opts.startTimeout } : {}),
  });
  const m = cluster.members[0]!;
  let stopped = false;
  return {
    clientPort: m.clientPort,
    peerPort: m.peerPort,
    endpoint: m.endpoint,
    dataDir: m.dataDir,
    ctlArgs: cluster.ctlArgs,
    url: (prefix = '/') => cluster.url(prefix),
    get running() {
      return m.running;
    },
    async start() {
      if (stopped) throw new Error('etcd test server was stopped');
      await m.start({ ...(opts.startTimeout ? { timeoutMs: opts.startTimeout } : {}) });
    },
    kill: () => m.kill(),
    async restart() {
      await m.kill();
      await m.start({ ...(opts.startTimeout ? { timeoutMs: opts.startTimeout } : {}) });
    },
    etcdctl: (...args) => cluster.etcdctl(...args),
    revision: () => cluster.revision(),
    compact: () => cluster.compact(),
    async stop() {
      stopped = true;
      await cluster.close();
    },
    log: () => m.log(),
  };
}

/**
 * A TCP proxy in front of `target` (`host:port`), over the published fixture's proxy:
 * `block()` resets every open connection and refuses new ones until `unblock()` (a network cut the
 * client sees at once); `pause()` keeps connections open but holds every byte until `resume()` (a
 * silent partition, detected only by timeouts).
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
  const p = await FixtureProxy.start(target);
  return {
    port: p.port,
    endpoint: p.endpoint,
    get connections() {
      return p.connections;
    },
    block: () => p.cut(),
    unblock: () => p.heal(),
    pause: () => p.pause(),
    resume: () => p.heal(),
    close: () => p.close(),
  };
}
