/**
 * Real etcd for tests: a cluster of N members (default 3) on free loopback ports, each with its
 * own temporary data dir and, by default, a TCP proxy in front of its client port that a test can
 * cut, delay or blackhole (see proxy.ts). Members can be killed (-9), stopped (SIGTERM), restarted
 * on the same ports and data dir, paused (SIGSTOP) and resumed (SIGCONT). Started from the Debian
 * binary (/usr/bin/etcd, override with $ETCD_BIN or `bin`).
 *
 *   const etcd = await EtcdCluster.start();                // 3 members, heartbeat 50 ms, election 500 ms
 *   const b = await openBackend(etcd.url('/app'));          // etcd://<proxy1>,<proxy2>,<proxy3>/app
 *   const leader = await etcd.leader();
 *   await leader.kill();                                    // kill -9
 *   await etcd.waitHealthy();                               // a new leader, the others healthy
 *   await leader.start();
 *   etcd.members[1].proxy!.blackhole();
 *   await etcd.close();                                     // kills everything, removes the dirs
 *
 * A single member (`size: 1`) is what the single-node tests use; then the heartbeat can be 10 ms
 * and the election 100 ms, which makes etcd's minimum lease TTL 1 s (ceil(1.5 × election)).
 */
import { spawn, execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import http from 'node:http';
import https from 'node:https';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ServerGroup, ServerProcess } from './member.js';
import { Child, freePort, trackDir, waitFor } from './processes.js';
import { TcpProxy } from './proxy.js';

const execFileP = promisify(execFile);

export const ETCD_BIN = process.env.ETCD_BIN ?? '/usr/bin/etcd';
export const ETCDCTL_BIN = process.env.ETCDCTL_BIN ?? '/usr/bin/etcdctl';

/** PEM files for a TLS member (server certificate for 127.0.0.1) and a client certificate. */
export interface EtcdTlsFiles {
  ca: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
  /** Require client certificates signed by `ca`. */
  clientCertAuth?: boolean;
}

export interface EtcdMemberConfig {
  name: string;
  dataDir: string;
  clientPort: number;
  peerPort: number;
  /** `name=http://127.0.0.1:<peer>,...` over every member. */
  initialCluster: string;
  /** Distinguishes this cluster from any other on the machine. */
  clusterToken: string;
  heartbeatMs: number;
  electionMs: number;
  tls?: EtcdTlsFiles;
  args?: readonly string[];
  bin?: string;
  /** Removed if this process dies without cleaning up (default `dataDir`; the cluster's root). */
  cleanupDir?: string;
}

/** What a member says about itself (Maintenance.Status). Ids are decimal strings. */
export interface EtcdMemberStatus {
  memberId: string;
  /** '0' while the member knows no leader. */
  leaderId: string;
  raftTerm: number;
  raftIndex: number;
  revision: number;
}

export class EtcdMember extends ServerProcess {
  private output = '';

  constructor(
    readonly index: number,
    readonly config: EtcdMemberConfig,
  ) {
    super();
  }

  get name(): string {
    return this.config.name;
  }
  get clientPort(): number {
    return this.config.clientPort;
  }
  get peerPort(): number {
    return this.config.peerPort;
  }
  get dataDir(): string {
    return this.config.dataDir;
  }
  /** `127.0.0.1:<client port>`: the member itself, bypassing its proxy. */
  get endpoint(): string {
    return `127.0.0.1:${this.config.clientPort}`;
  }
  get clientUrl(): string {
    return `${this.config.tls ? 'https' : 'http'}://${this.endpoint}`;
  }
  /** etcd's own output (last 64 KiB). */
  log(): string {
    return this.output;
  }

  /**
   * Spawn the member (no-op if running). With `wait` (default), resolve once it reports healthy,
   * which needs a leader: when starting a whole cluster, start every member with `wait: false`
   * and wait on the cluster instead.
   */
  async start(opts: { wait?: boolean; timeoutMs?: number } = {}): Promise<void> {
    if (this.running) return;
    const c = this.config;
    const tls = c.tls;
    const client = this.clientUrl;
    const peer = `http://127.0.0.1:${c.peerPort}`;
    const tlsArgs = tls
      ? ['--cert-file', tls.serverCert, '--key-file', tls.serverKey, ...(tls.clientCertAuth ? ['--client-cert-auth', '--trusted-ca-file', tls.ca] : [])]
      : [];
    const proc = spawn(
      c.bin ?? ETCD_BIN,
      [
        '--name', c.name,
        '--data-dir', c.dataDir,
        '--listen-client-urls', client,
        '--advertise-client-urls', client,
        '--listen-peer-urls', peer,
        '--initial-advertise-peer-urls', peer,
        '--initial-cluster', c.initialCluster,
        '--initial-cluster-state', 'new',
        '--initial-cluster-token', c.clusterToken,
        '--heartbeat-interval', String(c.heartbeatMs),
        '--election-timeout', String(c.electionMs),
        '--logger', 'zap',
        '--log-level', 'warn',
        ...tlsArgs,
        ...(c.args ?? []),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    const child = new Child(proc, { dir: c.cleanupDir ?? c.dataDir });
    this.child = child;
    this.starts++;
    const onData = (d: Buffer) => {
      this.output = (this.output + d.toString()).slice(-65536);
    };
    proc.stdout!.on('data', onData);
    proc.stderr!.on('data', onData);
    proc.once('error', (e) => (this.output += `\nspawn error: ${String(e)}`));
    if (opts.wait === false) return;
    await this.waitHealthy(opts.timeoutMs ?? 15_000);
  }

  /** Resolve once /health says true (bounded); fail at once if the process exits. */
  async waitHealthy(timeoutMs = 15_000): Promise<void> {
    const child = this.child;
    await waitFor(
      `etcd member ${this.name} healthy`,
      async () => {
        if (!child || child.gone) throw new Error(`etcd member ${this.name} exited:\n${this.output.slice(-2000)}`);
        return (await this.healthy(1000)) ? true : undefined;
      },
      { timeoutMs, intervalMs: 25, detail: () => this.output.slice(-2000) },
    ).catch((e: Error) => {
      // An exited process will not become healthy: report that, not the timeout.
      if (!child || child.gone) throw new Error(`etcd member ${this.name} exited during start:\n${this.output.slice(-2000)}`, { cause: e });
      throw e;
    });
  }

  async healthy(timeoutMs = 1000): Promise<boolean> {
    try {
      const body = await this.http('GET', '/health', undefined, timeoutMs);
      return (JSON.parse(body) as { health?: string }).health === 'true';
    } catch {
      return false; // not listening or not answering: the caller decides what that means
    }
  }

  /** The member's own view (undefined when it does not answer within `timeoutMs`). */
  async status(timeoutMs = 1000): Promise<EtcdMemberStatus | undefined> {
    try {
      const body = await this.http('POST', '/v3/maintenance/status', '{}', timeoutMs);
      const s = JSON.parse(body) as { header?: { member_id?: string; revision?: string }; leader?: string; raftTerm?: string; raftIndex?: string };
      return {
        memberId: String(s.header?.member_id ?? '0'),
        leaderId: String(s.leader ?? '0'),
        raftTerm: Number(s.raftTerm ?? 0),
        raftIndex: Number(s.raftIndex ?? 0),
        revision: Number(s.header?.revision ?? 0),
      };
    } catch {
      return undefined;
    }
  }

  /** One HTTP request to the member's client port (JSON gateway), with TLS material if any. */
  private http(method: string, urlPath: string, body: string | undefined, timeoutMs: number): Promise<string> {
    const tls = this.config.tls;
    const mod = tls ? https : http;
    const extra = tls ? { ca: readFileSync(tls.ca), cert: readFileSync(tls.clientCert), key: readFileSync(tls.clientKey) } : {};
    return new Promise((resolve, reject) => {
      const req = mod.request(`${this.clientUrl}${urlPath}`, { method, timeout: timeoutMs, agent: false, ...extra }, (res) => {
        let data = '';
        res.on('data', (d: Buffer) => (data += d.toString()));
        res.on('end', () => (res.statusCode === 200 ? resolve(data) : reject(new Error(`HTTP ${res.statusCode}: ${data}`))));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      req.end(body);
    });
  }

  /** Kill and remove the data dir. */
  async destroy(): Promise<void> {
    await this.kill('SIGKILL');
    await rm(this.config.dataDir, { recursive: true, force: true });
  }
}

export interface EtcdClusterOptions {
  /** Members (default 3). */
  size?: number;
  /** --heartbeat-interval (default 50 ms). */
  heartbeatMs?: number;
  /** --election-timeout (default 500 ms). */
  electionMs?: number;
  /** A TCP proxy in front of every member's client port (default true). */
  proxies?: boolean;
  /** Serve clients over TLS. */
  tls?: EtcdTlsFiles;
  /** Extra etcd flags for every member. */
  args?: readonly string[];
  /** Where the data dirs go (default the OS temp dir; /dev/shm makes fsync free). */
  dataRoot?: string;
  /** How long start() waits for a healthy cluster (default 30 s). */
  startTimeoutMs?: number;
  /** How often start() asks whether every member is healthy (default 50 ms). */
  pollMs?: number;
  bin?: string;
}

export class EtcdCluster extends ServerGroup<EtcdMember> {
  /** Extra etcdctl flags for every etcdctl() call (e.g. `--user=root:pw`). */
  readonly ctlArgs: string[] = [];

  private constructor(
    members: readonly EtcdMember[],
    root: string,
    private readonly tls: EtcdTlsFiles | undefined,
  ) {
    super(members, root);
  }

  static async start(opts: EtcdClusterOptions = {}): Promise<EtcdCluster> {
    const size = opts.size ?? 3;
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`cluster size must be a positive integer, got ${size}`);
    // A port taken between freePort() and etcd's bind makes a member exit: retry with new ports.
    let lastErr: unknown;
    for (let attempt = 0; attempt < 4; attempt++) {
      const root = await mkdtemp(path.join(opts.dataRoot ?? os.tmpdir(), 'roster-etcd-'));
      trackDir(root);
      const token = path.basename(root);
      const ports: { client: number; peer: number }[] = [];
      const taken = new Set<number>();
      while (ports.length < size) {
        const client = await freePort();
        const peer = await freePort();
        if (client === peer || taken.has(client) || taken.has(peer)) continue;
        taken.add(client).add(peer);
        ports.push({ client, peer });
      }
      const names = ports.map((_, i) => (size === 1 ? 'roster-test' : `m${i + 1}`));
      const initialCluster = ports.map((p, i) => `${names[i]}=http://127.0.0.1:${p.peer}`).join(',');
      const members = ports.map(
        (p, i) =>
          new EtcdMember(i, {
            name: names[i]!,
            dataDir: path.join(root, names[i]!),
            clientPort: p.client,
            peerPort: p.peer,
            initialCluster,
            clusterToken: token,
            cleanupDir: root,
            heartbeatMs: opts.heartbeatMs ?? 50,
            electionMs: opts.electionMs ?? 500,
            ...(opts.tls ? { tls: opts.tls } : {}),
            ...(opts.args ? { args: opts.args } : {}),
            ...(opts.bin ? { bin: opts.bin } : {}),
          }),
      );
      const cluster = new EtcdCluster(members, root, opts.tls);
      try {
        if (opts.proxies !== false) for (const m of members) m.proxy = await TcpProxy.start(m.endpoint);
        for (const m of members) await m.start({ wait: false });
        await cluster.waitHealthy(opts.startTimeoutMs ?? 30_000, opts.pollMs);
        const dead = members.find((m) => !m.running);
        if (dead) throw new Error(`etcd member ${dead.name} exited during start:\n${dead.log().slice(-2000)}`);
        return cluster;
      } catch (e) {
        lastErr = e;
        const inUse = members.some((m) => /address already in use/i.test(m.log()));
        await cluster.close();
        if (!inUse) break;
      }
    }
    throw lastErr;
  }

  /** Client endpoints (`host:port`, through the proxies when there are any). */
  get endpoints(): string[] {
    return this.members.map((m) => m.clientEndpoint);
  }

  /** roster backend URL over every member: `etcd://p1,p2,p3<prefix>` (`etcds://` with TLS). */
  url(prefix = '/'): string {
    return `${this.tls ? 'etcds' : 'etcd'}://${this.endpoints.join(',')}${prefix}`;
  }

  /** The same URL, bypassing the proxies. */
  directUrl(prefix = '/'): string {
    return `${this.tls ? 'etcds' : 'etcd'}://${this.members.map((m) => m.endpoint).join(',')}${prefix}`;
  }

  /**
   * The current leader: the live member whose status says it leads, confirmed by a majority of
   * the live members naming the same leader (so a deposed leader that has not heard yet is not
   * returned). Waits (bounded) through an election.
   */
  async leader(timeoutMs = 15_000): Promise<EtcdMember> {
    return waitFor(
      'etcd leader',
      async () => {
        const live = this.live;
        const statuses = await Promise.all(live.map((m) => m.status(1000)));
        const votes = new Map<string, number>();
        for (const s of statuses) if (s && s.leaderId !== '0') votes.set(s.leaderId, (votes.get(s.leaderId) ?? 0) + 1);
        for (const [id, n] of votes) {
          if (n <= this.members.length / 2) continue;
          const i = statuses.findIndex((s) => s?.memberId === id);
          if (i >= 0) return live[i];
        }
        return undefined;
      },
      { timeoutMs, intervalMs: 50 },
    );
  }

  /** Live members other than the current leader. */
  async followers(timeoutMs = 15_000): Promise<EtcdMember[]> {
    const leader = await this.leader(timeoutMs);
    return this.live.filter((m) => m !== leader);
  }

  /** Resolve once every running, unpaused member reports healthy (which implies a leader). */
  async waitHealthy(timeoutMs = 30_000, pollMs = 50): Promise<void> {
    await waitFor(
      'etcd cluster healthy',
      async () => {
        const live = this.live; // killed or paused members are down on purpose: not waited for
        if (live.length === 0) throw new Error('no etcd member is running');
        const ok = await Promise.all(live.map((m) => m.healthy(1000)));
        return ok.every(Boolean) ? true : undefined;
      },
      { timeoutMs, intervalMs: pollMs, detail: () => this.members.map((m) => `--- ${m.name}\n${m.log().slice(-1500)}`).join('\n') },
    );
  }

  /** Run etcdctl against the running members (directly, not through the proxies); resolves with stdout. */
  async etcdctl(...args: string[]): Promise<string> {
    const tls = this.tls;
    const tlsArgs = tls ? [`--cacert=${tls.ca}`, `--cert=${tls.clientCert}`, `--key=${tls.clientKey}`] : [];
    const endpoints = this.live.map((m) => m.clientUrl).join(',');
    const { stdout } = await execFileP(ETCDCTL_BIN, [`--endpoints=${endpoints}`, '--dial-timeout=3s', '--command-timeout=10s', ...tlsArgs, ...this.ctlArgs, ...args], {
      env: { ...process.env, ETCDCTL_API: '3' },
      timeout: 15_000,
    });
    return stdout;
  }

  /** Current store revision. */
  async revision(): Promise<number> {
    const statuses = await Promise.all(this.live.map((m) => m.status(5000)));
    const revs = statuses.map((s) => s?.revision ?? 0);
    return Math.max(0, ...revs);
  }

  /** Compact history up to the current revision (physically): older revisions are gone. */
  async compact(): Promise<number> {
    const rev = await this.revision();
    await this.etcdctl('compact', '--physical', String(rev));
    return rev;
  }
}
