/**
 * Real ZooKeeper for tests (Debian's `zookeeper` package, /usr/share/java/zookeeper.jar): an
 * ensemble of N nodes (default 3) on loopback, each with its own data dir and, by default, a TCP
 * proxy in front of its client port that a test can cut, delay or blackhole (see proxy.ts). Nodes
 * can be killed (-9), stopped (SIGTERM), restarted on the same ports and data dir, paused (SIGSTOP)
 * and resumed (SIGCONT). `size: 1` runs a standalone server (ZooKeeperServerMain).
 *
 *   const zk = await ZooKeeperEnsemble.start({ tickTime: 200 });
 *   const b = await openBackend(zk.url('/app'));            // zk://<proxy1>,<proxy2>,<proxy3>/app
 *   const leader = await zk.leader();
 *   await leader.kill();
 *   await zk.waitHealthy();                                 // a new leader, the others serving
 *   await zk.close();
 *
 * Every server runs with `admin.enableServer=false` and `clientPortAddress=127.0.0.1`. Session
 * timeouts are negotiated into [2, 300] ticks (ZooKeeper's default maximum is 20 ticks), so a small
 * tickTime still allows long sessions. The JVM's output goes to <dataDir>/zookeeper.log.
 */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ServerGroup, ServerProcess } from './member.js';
import { Child, fourLetter, freePort, trackDir, waitFor } from './processes.js';
import { TcpProxy } from './proxy.js';

export const ZK_JAR = process.env.ZOOKEEPER_JAR ?? '/usr/share/java/zookeeper.jar';
/** An SLF4J binding so the server logs (to <dataDir>/zookeeper.log); without one it runs silent. */
const LOG_JARS = ['/usr/share/java/slf4j-simple.jar', '/usr/share/java/slf4j-nop.jar'];

/** JVM flags the fixtures use by default: a quick start and a small footprint, not peak speed. */
export const TEST_JVM_ARGS: readonly string[] = ['-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-Xshare:auto'];

export function zookeeperAvailable(): boolean {
  return existsSync(ZK_JAR);
}

export type ZooKeeperMode = 'leader' | 'follower' | 'observer' | 'standalone';

export interface ZooKeeperMemberConfig {
  /** myid (1-based). */
  id: number;
  /** The member's own directory: zoo.cfg, myid's data/ and zookeeper.log live here. */
  dir: string;
  clientPort: number;
  /** `server.N=127.0.0.1:<quorum>:<election>` lines for an ensemble; absent for standalone. */
  servers?: readonly string[];
  tickTime: number;
  /** Extra zoo.cfg entries (override the defaults). */
  config?: Record<string, string | number>;
  /** JVM heap cap (default 256 MB). */
  heapMb?: number;
  /** JVM flags replacing the test-tuned defaults (TEST_JVM_ARGS: quick start, little memory, no
   *  C2 compiler); `[]` runs the JVM as ZooKeeper ships it (what a benchmark wants). */
  jvmArgs?: readonly string[];
  /** Removed if this process dies without cleaning up (default `dir`; the ensemble's root). */
  cleanupDir?: string;
}

export class ZooKeeperMember extends ServerProcess {
  constructor(readonly config: ZooKeeperMemberConfig) {
    super();
  }

  get id(): number {
    return this.config.id;
  }
  get name(): string {
    return `zk${this.config.id}`;
  }
  get clientPort(): number {
    return this.config.clientPort;
  }
  get dir(): string {
    return this.config.dir;
  }
  get tickTime(): number {
    return this.config.tickTime;
  }
  /** `127.0.0.1:<client port>`: the node itself, bypassing its proxy. */
  get endpoint(): string {
    return `127.0.0.1:${this.config.clientPort}`;
  }

  /**
   * Spawn the JVM (no-op if running). With `wait` (default) resolve once it serves clients, which
   * for an ensemble node needs a quorum: when starting a whole ensemble, start every node with
   * `wait: false` and wait on the ensemble instead.
   */
  async start(opts: { wait?: boolean; timeoutMs?: number } = {}): Promise<void> {
    if (this.running) return;
    const c = this.config;
    const dataDir = path.join(c.dir, 'data');
    mkdirSync(dataDir, { recursive: true });
    const cfg: Record<string, string | number> = {
      tickTime: c.tickTime,
      dataDir,
      clientPort: c.clientPort,
      clientPortAddress: '127.0.0.1',
      'admin.enableServer': 'false',
      '4lw.commands.whitelist': '*',
      maxSessionTimeout: c.tickTime * 300,
      maxClientCnxns: 0,
      'audit.enable': 'false',
      ...(c.servers ? { initLimit: 20, syncLimit: 5 } : {}),
      ...c.config,
    };
    const lines = Object.entries(cfg).map(([k, v]) => `${k}=${v}`);
    if (c.servers) {
      lines.push(...c.servers);
      await writeFile(path.join(dataDir, 'myid'), `${c.id}\n`);
    }
    const cfgPath = path.join(c.dir, 'zoo.cfg');
    await writeFile(cfgPath, lines.join('\n') + '\n');
    const fd = openSync(path.join(c.dir, 'zookeeper.log'), 'a');
    const cp = [ZK_JAR, ...LOG_JARS.filter((j) => existsSync(j)).slice(0, 1)].join(':');
    const main = c.servers ? 'org.apache.zookeeper.server.quorum.QuorumPeerMain' : 'org.apache.zookeeper.server.ZooKeeperServerMain';
    let proc;
    try {
      proc = spawn(
        'java',
        [
          '-Xms32m',
          `-Xmx${c.heapMb ?? 256}m`,
          ...(c.jvmArgs ?? TEST_JVM_ARGS),
          '-Dzookeeper.admin.enableServer=false',
          '-Dzookeeper.jmx.log4j.disable=true',
          `-Dorg.slf4j.simpleLogger.defaultLogLevel=${process.env.ZK_LOG_LEVEL ?? 'warn'}`,
          '-cp',
          cp,
          main,
          cfgPath,
        ],
        { stdio: ['ignore', fd, fd] },
      );
    } finally {
      closeSync(fd);
    }
    const child = new Child(proc, { dir: c.cleanupDir ?? c.dir });
    this.child = child;
    this.starts++;
    if (opts.wait === false) return;
    await this.waitServing(opts.timeoutMs ?? 30_000);
  }

  /** Resolve once `srvr` reports a serving mode (bounded); fail at once if the JVM exits. */
  async waitServing(timeoutMs = 30_000): Promise<ZooKeeperMode> {
    const child = this.child;
    return waitFor(
      `ZooKeeper ${this.name} serving`,
      async () => {
        if (!child || child.gone) throw new Error(`ZooKeeper ${this.name} exited:\n${await this.logTail()}`);
        return (await this.srvr(1000))?.mode;
      },
      { timeoutMs, intervalMs: 50, detail: () => this.logTail() },
    ).catch(async (e: Error) => {
      if (!child || child.gone) throw new Error(`ZooKeeper ${this.name} on port ${this.clientPort} exited during start:\n${await this.logTail()}`, { cause: e });
      throw e;
    });
  }

  /** A four-letter command to the node itself (not through the proxy). */
  fourLetter(cmd: string, timeoutMs = 2000): Promise<string> {
    return fourLetter(this.clientPort, cmd, timeoutMs);
  }

  /** Mode and last zxid from `srvr`; undefined when the node does not serve (no quorum, down). */
  async srvr(timeoutMs = 1000): Promise<{ mode: ZooKeeperMode; zxid: number } | undefined> {
    try {
      const out = await this.fourLetter('srvr', timeoutMs);
      const mode = /Mode: (leader|follower|observer|standalone)/.exec(out)?.[1] as ZooKeeperMode | undefined;
      if (!mode) return undefined;
      const zxid = /Zxid: 0x([0-9a-f]+)/.exec(out)?.[1];
      return { mode, zxid: zxid ? Number(BigInt(`0x${zxid}`)) : 0 };
    } catch {
      return undefined;
    }
  }

  /**
   * Session ids (hex, no 0x) the ensemble tracks, from `dump` (answered with sessions only by the
   * leader or a standalone server).
   */
  async sessions(): Promise<Set<string>> {
    const dump = await this.fourLetter('dump');
    const tracker = dump.split('ephemeral nodes dump:')[0] ?? '';
    return new Set([...tracker.matchAll(/0x([0-9a-f]+)/g)].map((m) => m[1]!));
  }

  async logTail(lines = 40): Promise<string> {
    try {
      return (await readFile(path.join(this.config.dir, 'zookeeper.log'), 'utf8')).split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** Kill and remove the node's directory. */
  async destroy(): Promise<void> {
    await this.kill('SIGKILL');
    await rm(this.config.dir, { recursive: true, force: true });
  }
}

export interface ZooKeeperEnsembleOptions {
  /** Nodes (default 3); 1 runs a standalone server. */
  size?: number;
  /** ms (default 200). Followers notice a dead leader after syncLimit (5) ticks. */
  tickTime?: number;
  /** A TCP proxy in front of every node's client port (default true). */
  proxies?: boolean;
  /** Extra zoo.cfg entries for every node. */
  config?: Record<string, string | number>;
  /** Where the data dirs go (default the OS temp dir). */
  dataRoot?: string;
  /** How long start() waits for every node to serve (default 60 s). */
  startTimeoutMs?: number;
  /** How often start() asks whether every node serves (default 50 ms). */
  pollMs?: number;
  heapMb?: number;
  /** See ZooKeeperMemberConfig.jvmArgs. */
  jvmArgs?: readonly string[];
}

export class ZooKeeperEnsemble extends ServerGroup<ZooKeeperMember> {
  private constructor(members: readonly ZooKeeperMember[], root: string) {
    super(members, root);
  }

  static async start(opts: ZooKeeperEnsembleOptions = {}): Promise<ZooKeeperEnsemble> {
    const size = opts.size ?? 3;
    if (!Number.isInteger(size) || size < 1) throw new RangeError(`ensemble size must be a positive integer, got ${size}`);
    let lastErr: unknown;
    for (let attempt = 0; attempt < 4; attempt++) {
      const root = await mkdtemp(path.join(opts.dataRoot ?? os.tmpdir(), 'roster-zk-'));
      trackDir(root);
      const taken = new Set<number>();
      const port = async () => {
        for (;;) {
          const p = await freePort();
          if (!taken.has(p)) return taken.add(p), p;
        }
      };
      const specs: { client: number; quorum: number; election: number }[] = [];
      for (let i = 0; i < size; i++) specs.push({ client: await port(), quorum: await port(), election: await port() });
      const servers = size === 1 ? undefined : specs.map((s, i) => `server.${i + 1}=127.0.0.1:${s.quorum}:${s.election}`);
      const members = specs.map(
        (s, i) =>
          new ZooKeeperMember({
            id: i + 1,
            dir: path.join(root, `zk${i + 1}`),
            cleanupDir: root,
            clientPort: s.client,
            ...(servers ? { servers } : {}),
            tickTime: opts.tickTime ?? 200,
            ...(opts.config ? { config: opts.config } : {}),
            ...(opts.heapMb ? { heapMb: opts.heapMb } : {}),
            ...(opts.jvmArgs ? { jvmArgs: opts.jvmArgs } : {}),
          }),
      );
      const ensemble = new ZooKeeperEnsemble(members, root);
      try {
        if (opts.proxies !== false) for (const m of members) m.proxy = await TcpProxy.start(m.endpoint);
        for (const m of members) await m.start({ wait: false });
        await ensemble.waitHealthy(opts.startTimeoutMs ?? 60_000, opts.pollMs);
        const dead = members.find((m) => !m.running);
        if (dead) throw new Error(`ZooKeeper ${dead.name} exited during start:\n${await dead.logTail()}`);
        return ensemble;
      } catch (e) {
        lastErr = e;
        const logs = await Promise.all(members.map((m) => m.logTail(200)));
        await ensemble.close();
        if (!logs.some((l) => /Address already in use|BindException/.test(l))) break;
      }
    }
    throw lastErr;
  }

  /** `host:port,...` through the proxies (when there are any). */
  get connectString(): string {
    return this.members.map((m) => m.clientEndpoint).join(',');
  }
  /** `host:port,...` of the nodes themselves. */
  get directConnectString(): string {
    return this.members.map((m) => m.endpoint).join(',');
  }
  /** roster backend URL over every node: `zk://p1,p2,p3/<chroot>`. */
  url(chroot = ''): string {
    return `zk://${this.connectString}${chroot === '' || chroot.startsWith('/') ? chroot : `/${chroot}`}`;
  }
  directUrl(chroot = ''): string {
    return `zk://${this.directConnectString}${chroot === '' || chroot.startsWith('/') ? chroot : `/${chroot}`}`;
  }

  /** The node that reports `Mode: leader` (or the standalone server); waits through an election. */
  async leader(timeoutMs = 30_000): Promise<ZooKeeperMember> {
    return waitFor(
      'ZooKeeper leader',
      async () => {
        const live = this.live;
        const modes = await Promise.all(live.map((m) => m.srvr(1000)));
        const i = modes.findIndex((s) => s?.mode === 'leader' || s?.mode === 'standalone');
        return i >= 0 ? live[i] : undefined;
      },
      { timeoutMs, intervalMs: 50 },
    );
  }

  /** Live nodes other than the current leader. */
  async followers(timeoutMs = 30_000): Promise<ZooKeeperMember[]> {
    const leader = await this.leader(timeoutMs);
    return this.live.filter((m) => m !== leader);
  }

  /** Resolve once every running, unpaused node serves clients and exactly one of them leads. */
  async waitHealthy(timeoutMs = 60_000, pollMs = 50): Promise<void> {
    await waitFor(
      'ZooKeeper ensemble healthy',
      async () => {
        const live = this.live;
        if (live.length === 0) throw new Error('no ZooKeeper node is running');
        const modes = await Promise.all(live.map((m) => m.srvr(1000)));
        if (modes.some((s) => s === undefined)) return undefined;
        const leaders = modes.filter((s) => s!.mode === 'leader' || s!.mode === 'standalone').length;
        return leaders === 1 ? true : undefined;
      },
      {
        timeoutMs,
        intervalMs: pollMs,
        detail: async () => (await Promise.all(this.members.map(async (m) => `--- ${m.name}\n${await m.logTail(15)}`))).join('\n'),
      },
    );
  }
}
