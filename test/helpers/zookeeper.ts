/**
 * Real ZooKeeper servers for tests (Debian's `zookeeper` package), plus a TCP proxy to cut
 * connections and a zkCli.sh wrapper to act as "the other party".
 *
 *   const zk = await startZooKeeper();          // free loopback port, temp data dir, tickTime 200
 *   zk.url('/chroot')                             // zk://127.0.0.1:<port>/chroot
 *   await zk.restart();                           // kill -9, start again on the same port and dir
 *   await zk.stop();                              // kill and remove the data dir
 *
 * Readiness = the 4-letter `srvr` command answering `Mode: standalone` (bounded wait). The JVM's
 * output goes to <dataDir>/zookeeper.log; its tail is included in start errors.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fourLetter, freePort, track } from '../../src/testing/cluster/processes.js';
import { TcpProxy as FixtureProxy } from '../../src/testing/cluster/proxy.js';
import { ZooKeeperMember, zookeeperAvailable } from '../../src/testing/cluster/zookeeper-ensemble.js';

export { fourLetter, freePort, zookeeperAvailable };
export const ZKCLI = '/usr/share/zookeeper/bin/zkCli.sh';

export interface ZooKeeperOptions {
  /** ms; session timeouts are negotiated into [2, 300] ticks here (the default max is 20). */
  tickTime?: number;
  port?: number;
  dataDir?: string;
  /** How long start() waits for `Mode: standalone`. Default 30 s. */
  startTimeout?: number;
  /** Extra zoo.cfg lines. */
  config?: Record<string, string | number>;
}

/** A standalone server: the published fixture's ZooKeeperMember without an ensemble. */
export class ZooKeeperServer {
  private readonly member: ZooKeeperMember;

  constructor(
    readonly port: number,
    readonly dataDir: string,
    readonly tickTime: number,
    private readonly startTimeout: number,
    extra: Record<string, string | number>,
  ) {
    this.member = new ZooKeeperMember({ id: 1, dir: dataDir, clientPort: port, tickTime, config: extra });
  }

  /** "127.0.0.1:<port>" (for zkCli -server and node-zookeeper-client). */
  get connectString(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** zk:// URL with an optional chroot ("/roster-test"). */
  url(chroot = ''): string {
    return `zk://127.0.0.1:${this.port}${chroot.startsWith('/') || chroot === '' ? chroot : `/${chroot}`}`;
  }

  get pid(): number | undefined {
    return this.member.pid;
  }
  get running(): boolean {
    return this.member.running;
  }
  /** Number of starts (1 after startZooKeeper). */
  get starts(): number {
    return this.member.starts;
  }

  async start(): Promise<void> {
    if (this.member.running) throw new Error('ZooKeeper already running');
    await this.member.start({ timeoutMs: this.startTimeout });
  }
  /** kill -9 and wait for the process to be gone. */
  kill(): Promise<void> {
    return this.member.kill();
  }
  /** kill -9, then start again with the same port and data dir. */
  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }
  /** Stop and remove the data dir. */
  async stop(): Promise<void> {
    await this.member.destroy();
  }
  logTail(lines = 40): Promise<string> {
    return this.member.logTail(lines);
  }
  /** Session ids (hex, no 0x) the server currently tracks, from the `dump` 4-letter command. */
  sessions(): Promise<Set<string>> {
    return this.member.sessions();
  }

  /** Wait until the server no longer tracks `sessionId` (it expired or was closed); bounded. */
  async waitSessionGone(sessionId: string, timeoutMs = 10_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!(await this.sessions()).has(sessionId)) return;
      if (Date.now() > deadline) throw new Error(`ZooKeeper still tracks session 0x${sessionId} after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 50)); // polling the server's own answer, bounded above
    }
  }

  /** Run one zkCli.sh command (e.g. ['get', '/a']); resolves with stdout+stderr. */
  cli(args: string[], timeoutMs = 30_000): Promise<{ code: number | null; out: string }> {
    return runCli(['-server', this.connectString, ...args], timeoutMs);
  }

  /** An interactive zkCli.sh: its own ZooKeeper session for as long as it runs. */
  interactiveCli(): ZkCli {
    return new ZkCli(this.connectString);
  }
}

export async function startZooKeeper(opts: ZooKeeperOptions = {}): Promise<ZooKeeperServer> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'roster-zk-')));
  for (let attempt = 0; ; attempt++) {
    const port = opts.port ?? (await freePort());
    const zk = new ZooKeeperServer(port, dataDir, opts.tickTime ?? 200, opts.startTimeout ?? 30_000, opts.config ?? {});
    try {
      await zk.start();
      return zk;
    } catch (e) {
      // Another process may have taken the free port between our probe and the JVM's bind.
      if (opts.port !== undefined || attempt >= 2 || !/Address already in use|BindException/.test(String(e))) {
        if (opts.dataDir === undefined) await rm(dataDir, { recursive: true, force: true });
        throw e;
      }
    }
  }
}

function runCli(args: string[], timeoutMs: number): Promise<{ code: number | null; out: string }> {
  return new Promise((resolve, reject) => {
    const p = track(spawn(ZKCLI, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ZOO_LOG4J_PROP: 'WARN,CONSOLE' } }));
    let out = '';
    p.stdout.on('data', (d) => (out += d.toString()));
    p.stderr.on('data', (d) => (out += d.toString()));
    const t = setTimeout(() => {
      p.kill('SIGKILL');
      reject(new Error(`zkCli ${args.join(' ')} did not finish within ${timeoutMs} ms:\n${out}`));
    }, timeoutMs);
    p.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    p.on('close', (code) => {
      clearTimeout(t);
      resolve({ code, out });
    });
  });
}

/**
 * zkCli.sh kept running, fed commands on stdin: the way to hold an ephemeral node (`create -e`)
 * for as long as a "Java service" lives. kill() drops its session without closing it (the node
 * then expires after the session timeout); quit() closes it (the node goes at once).
 */
export class ZkCli {
  private proc: ChildProcess;
  private out = '';
  private listeners = new Set<() => void>();
  private exited: Promise<number | null>;

  constructor(server: string) {
    this.proc = track(spawn(ZKCLI, ['-server', server], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ZOO_LOG4J_PROP: 'WARN,CONSOLE' } }));
    const onData = (d: Buffer) => {
      this.out += d.toString();
      for (const l of [...this.listeners]) l();
    };
    this.proc.stdout!.on('data', onData);
    this.proc.stderr!.on('data', onData);
    this.exited = new Promise((resolve) => this.proc.once('close', (code) => resolve(code)));
  }

  get output(): string {
    return this.out;
  }

  /** Wait until the accumulated output matches `re` (bounded). */
  waitFor(re: RegExp, timeoutMs = 30_000): Promise<RegExpMatchArray> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const m = this.out.match(re);
        if (!m) return;
        clearTimeout(t);
        this.listeners.delete(check);
        resolve(m);
      };
      const t = setTimeout(() => {
        this.listeners.delete(check);
        reject(new Error(`zkCli: no output matching ${re} within ${timeoutMs} ms; got:\n${this.out.slice(-2000)}`));
      }, timeoutMs);
      this.listeners.add(check);
      check();
    });
  }

  /** Resolve once zkCli reports its session connected (bounded). */
  async connected(timeoutMs = 30_000): Promise<void> {
    await this.waitFor(/state:SyncConnected/, timeoutMs);
  }

  /** Send one command line; resolves once `until` appears after it (bounded). */
  async send(cmd: string, until: RegExp, timeoutMs = 30_000): Promise<string> {
    const start = this.out.length;
    this.proc.stdin!.write(cmd + '\n');
    await new Promise<void>((resolve, reject) => {
      const check = () => {
        if (!until.test(this.out.slice(start))) return;
        clearTimeout(t);
        this.listeners.delete(check);
        resolve();
      };
      const t = setTimeout(() => {
        this.listeners.delete(check);
        reject(new Error(`zkCli "${cmd}": no output matching ${until} within ${timeoutMs} ms; got:\n${this.out.slice(start).slice(-2000)}`));
      }, timeoutMs);
      this.listeners.add(check);
      check();
    });
    return this.out.slice(start);
  }

  async quit(): Promise<void> {
    this.proc.stdin!.write('quit\n');
    this.proc.stdin!.end();
    await this.exited;
  }

  async kill(): Promise<void> {
    this.proc.kill('SIGKILL');
    await this.exited;
  }
}

export type ProxyMode = 'forward' | 'reset' | 'blackhole';

/**
 * A TCP proxy on a free loopback port in front of a server (the published fixture's proxy).
 * `cut('reset')` destroys every connection and refuses new ones; `cut('blackhole')` keeps sockets
 * open but forwards nothing (the peer hears silence, as in a network partition); `heal()` forwards
 * again (connections that lived through a blackhole are reset).
 */
export class TcpProxy {
  private constructor(private readonly p: FixtureProxy) {}

  static async start(targetPort: number): Promise<TcpProxy> {
    return new TcpProxy(await FixtureProxy.start(targetPort));
  }
  get port(): number {
    return this.p.port;
  }
  get mode(): ProxyMode {
    const m = this.p.mode;
    return m === 'cut' ? 'reset' : m === 'blackhole' ? 'blackhole' : 'forward';
  }
  get connectString(): string {
    return this.p.endpoint;
  }
  url(chroot = ''): string {
    return `zk://${this.p.endpoint}${chroot.startsWith('/') || chroot === '' ? chroot : `/${chroot}`}`;
  }
  get connections(): number {
    return this.p.connections;
  }
  cut(mode: 'reset' | 'blackhole' = 'reset'): void {
    if (mode === 'reset') this.p.cut();
    else this.p.blackhole();
  }
  heal(): void {
    this.p.heal();
  }
  close(): Promise<void> {
    return this.p.close();
  }
}

/**
 * A plain ZooKeeper client (node-zookeeper-client, no roster code) for tests that need a foreign
 * writer: another process's view of the same znodes. Paths are absolute znode paths.
 */
export interface RawZk {
  create(path: string, data?: string | null, opts?: { ephemeral?: boolean }): Promise<void>;
  setData(path: string, data: string, version?: number): Promise<void>;
  remove(path: string, version?: number): Promise<void>;
  getData(path: string): Promise<{ data: string | null; version: number; ephemeralOwner: string } | undefined>;
  getChildren(path: string): Promise<string[]>;
  close(): Promise<void>;
}

export async function rawClient(connectString: string, opts: { sessionTimeout?: number; auth?: string } = {}): Promise<RawZk> {
  const { createRequire } = await import('node:module');
  const require = createRequire(import.meta.url);
   
  const zk = require('node-zookeeper-client') as any;
  const client = zk.createClient(connectString, { sessionTimeout: opts.sessionTimeout ?? 10_000, spinDelay: 100 });
  if (opts.auth) client.addAuthInfo('digest', Buffer.from(opts.auth));
  await new Promise<void>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`raw ZooKeeper client: no connection to ${connectString} within 10 s`)), 10_000);
    client.once('connected', () => {
      clearTimeout(t);
      resolve();
    });
    client.connect();
  });
  const cb = <T>(fn: (done: (err: unknown, v?: T) => void) => void) =>
    new Promise<T>((resolve, reject) => fn((err, v) => (err ? reject(err) : resolve(v as T))));
  const buf = (d: string | null | undefined) => (d === null || d === undefined ? undefined : Buffer.from(d));
  return {
    create: (path, data = null, o = {}) =>
      cb<void>((done) => client.create(path, buf(data), zk.ACL.OPEN_ACL_UNSAFE, o.ephemeral ? zk.CreateMode.EPHEMERAL : zk.CreateMode.PERSISTENT, done)),
    setData: (path, data, version = -1) => cb<void>((done) => client.setData(path, Buffer.from(data), version, done)),
    remove: (path, version = -1) => cb<void>((done) => client.remove(path, version, done)),
    getData: (path) =>
      new Promise((resolve, reject) =>
        client.getData(path, (err: { getCode(): number } | null, data: Buffer | undefined, stat: { version: number; ephemeralOwner: Buffer }) => {
          if (err) return err.getCode() === zk.Exception.NO_NODE ? resolve(undefined) : reject(err);
          resolve({ data: data === undefined ? null : data.toString(), version: stat.version, ephemeralOwner: stat.ephemeralOwner.readBigUInt64BE(0).toString(16) });
        }),
      ),
    getChildren: (path) => cb<string[]>((done) => client.getChildren(path, done)),
    close: () =>
      new Promise<void>((resolve) => {
        client.once('disconnected', () => resolve());
        client.close();
        setTimeout(resolve, 2000).unref();
      }),
  };
}
