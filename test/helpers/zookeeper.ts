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
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, connect, type Socket, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSync, closeSync } from 'node:fs';

const ZK_JAR = '/usr/share/java/zookeeper.jar';
/** An SLF4J binding so the server logs (to <dataDir>/zookeeper.log); without one it runs silent. */
const LOG_JARS = ['/usr/share/java/slf4j-simple.jar', '/usr/share/java/slf4j-nop.jar'];
export const ZKCLI = '/usr/share/zookeeper/bin/zkCli.sh';

/** Child processes (JVMs, zkCli) still running: killed if this process exits without stopping
 *  them (a failed or timed-out test), so no orphaned server outlives the test run. */
const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});
function track<C extends ChildProcess>(c: C): C {
  children.add(c);
  // Test runners may kill their workers with a signal ('exit' handlers do not run then): a small
  // watchdog kills the child once this process is gone. Polling once a second is its whole job.
  const dog = c.pid
    ? spawn('sh', ['-c', `while kill -0 ${process.pid} 2>/dev/null && kill -0 ${c.pid} 2>/dev/null; do sleep 1; done; kill -9 ${c.pid} 2>/dev/null`], {
        stdio: 'ignore',
        detached: true,
      })
    : undefined;
  dog?.unref();
  c.once('exit', () => {
    children.delete(c);
    dog?.kill('SIGKILL');
  });
  return c;
}

export function zookeeperAvailable(): boolean {
  return existsSync(ZK_JAR);
}

/** A free TCP port on 127.0.0.1 (bind to 0, read it, release it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

/** Send a 4-letter command and return the answer ('' if the server closed without answering). */
export function fourLetter(port: number, cmd: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect({ host: '127.0.0.1', port });
    let out = '';
    const t = setTimeout(() => {
      sock.destroy();
      reject(new Error(`4lw ${cmd} on ${port}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('connect', () => sock.write(cmd));
    sock.on('data', (d) => (out += d.toString()));
    sock.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    sock.on('close', () => {
      clearTimeout(t);
      resolve(out);
    });
  });
}

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

export class ZooKeeperServer {
  private proc: ChildProcess | undefined;
  private exited: Promise<void> | undefined;
  /** Number of starts (1 after startZooKeeper). */
  starts = 0;

  constructor(
    readonly port: number,
    readonly dataDir: string,
    readonly tickTime: number,
    private readonly startTimeout: number,
    private readonly extra: Record<string, string | number>,
  ) {}

  /** "127.0.0.1:<port>" (for zkCli -server and node-zookeeper-client). */
  get connectString(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** zk:// URL with an optional chroot ("/roster-test"). */
  url(chroot = ''): string {
    return `zk://127.0.0.1:${this.port}${chroot.startsWith('/') || chroot === '' ? chroot : `/${chroot}`}`;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get running(): boolean {
    return this.proc !== undefined;
  }

  async start(): Promise<void> {
    if (this.proc) throw new Error('ZooKeeper already running');
    const cfg = {
      tickTime: this.tickTime,
      dataDir: join(this.dataDir, 'data'),
      clientPort: this.port,
      clientPortAddress: '127.0.0.1',
      'admin.enableServer': 'false',
      '4lw.commands.whitelist': '*',
      maxSessionTimeout: this.tickTime * 300,
      maxClientCnxns: 0,
      'audit.enable': 'false',
      ...this.extra,
    };
    const cfgPath = join(this.dataDir, 'zoo.cfg');
    await writeFile(cfgPath, Object.entries(cfg).map(([k, v]) => `${k}=${v}`).join('\n') + '\n');
    const logPath = join(this.dataDir, 'zookeeper.log');
    const fd = openSync(logPath, 'a');
    const cp = [ZK_JAR, ...LOG_JARS.filter((j) => existsSync(j)).slice(0, 1)].join(':');
    const proc = track(spawn(
      'java',
      [
        '-Xms32m',
        '-Xmx256m',
        '-XX:+UseSerialGC',
        '-XX:TieredStopAtLevel=1',
        '-Xshare:auto',
        '-Dzookeeper.admin.enableServer=false',
        `-Dorg.slf4j.simpleLogger.defaultLogLevel=${process.env.ZK_LOG_LEVEL ?? 'warn'}`,
        '-cp',
        cp,
        'org.apache.zookeeper.server.ZooKeeperServerMain',
        cfgPath,
      ],
      { stdio: ['ignore', fd, fd], detached: false },
    ));
    closeSync(fd);
    this.proc = proc;
    this.starts++;
    this.exited = new Promise((resolve) => proc.once('exit', () => resolve()));
    const exitedEarly = this.exited.then(() => 'exited' as const);
    const deadline = Date.now() + this.startTimeout;
    for (;;) {
      const r = await Promise.race([fourLetter(this.port, 'srvr', 1000).catch(() => ''), exitedEarly]);
      if (r === 'exited') {
        this.proc = undefined;
        throw new Error(`ZooKeeper on port ${this.port} exited during start:\n${await this.logTail()}`);
      }
      if (/Mode: standalone/.test(r)) return;
      if (Date.now() > deadline) {
        await this.kill();
        throw new Error(`ZooKeeper on port ${this.port} not ready within ${this.startTimeout} ms:\n${await this.logTail()}`);
      }
      await new Promise((res) => setTimeout(res, 50)); // polling a real condition (the srvr answer), bounded above
    }
  }

  /** kill -9 and wait for the process to be gone. */
  async kill(): Promise<void> {
    const p = this.proc;
    if (!p) return;
    this.proc = undefined;
    p.kill('SIGKILL');
    await this.exited;
  }

  /** kill -9, then start again with the same port and data dir. */
  async restart(): Promise<void> {
    await this.kill();
    await this.start();
  }

  /** Stop and remove the data dir. */
  async stop(): Promise<void> {
    await this.kill();
    await rm(this.dataDir, { recursive: true, force: true });
  }

  async logTail(lines = 40): Promise<string> {
    try {
      return (await readFile(join(this.dataDir, 'zookeeper.log'), 'utf8')).split('\n').slice(-lines).join('\n');
    } catch {
      return '(no log)';
    }
  }

  /** Session ids (hex, no 0x) the server currently tracks, from the `dump` 4-letter command. */
  async sessions(): Promise<Set<string>> {
    const dump = await fourLetter(this.port, 'dump');
    const tracker = dump.split('ephemeral nodes dump:')[0] ?? '';
    return new Set([...tracker.matchAll(/0x([0-9a-f]+)/g)].map((m) => m[1]!));
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
 * A TCP proxy on a free loopback port in front of a server. `cut('reset')` destroys every
 * connection and refuses new ones; `cut('blackhole')` keeps sockets open but forwards nothing
 * (the peer hears silence, as in a network partition); `heal()` forwards again.
 */
export class TcpProxy {
  private server: Server;
  private pairs = new Set<{ a: Socket; b?: Socket }>();
  mode: ProxyMode = 'forward';
  port = 0;

  private constructor(private readonly targetPort: number) {
    this.server = createServer((client) => this.accept(client));
  }

  static async start(targetPort: number): Promise<TcpProxy> {
    const p = new TcpProxy(targetPort);
    await new Promise<void>((resolve, reject) => {
      p.server.once('error', reject);
      p.server.listen(0, '127.0.0.1', () => resolve());
    });
    const a = p.server.address();
    p.port = typeof a === 'object' && a ? a.port : 0;
    return p;
  }

  get connectString(): string {
    return `127.0.0.1:${this.port}`;
  }

  url(chroot = ''): string {
    return `zk://127.0.0.1:${this.port}${chroot.startsWith('/') || chroot === '' ? chroot : `/${chroot}`}`;
  }

  get connections(): number {
    return this.pairs.size;
  }

  private accept(client: Socket): void {
    client.on('error', () => undefined);
    if (this.mode === 'reset') {
      client.destroy();
      return;
    }
    const pair: { a: Socket; b?: Socket } = { a: client };
    this.pairs.add(pair);
    const drop = () => {
      pair.a.destroy();
      pair.b?.destroy();
      this.pairs.delete(pair);
    };
    client.on('close', drop);
    if (this.mode === 'blackhole') return; // accepted, never answered
    const upstream = connect({ host: '127.0.0.1', port: this.targetPort });
    pair.b = upstream;
    upstream.on('error', () => undefined);
    upstream.on('close', drop);
    client.on('data', (d) => {
      if (this.mode === 'forward') upstream.write(d);
    });
    upstream.on('data', (d) => {
      if (this.mode === 'forward') client.write(d);
    });
  }

  cut(mode: 'reset' | 'blackhole' = 'reset'): void {
    this.mode = mode;
    if (mode === 'reset') {
      for (const p of [...this.pairs]) {
        p.a.destroy();
        p.b?.destroy();
      }
      this.pairs.clear();
    }
  }

  heal(): void {
    if (this.mode === 'blackhole') {
      // Sockets that lived through the partition carry a half-lost stream: drop them so clients reconnect cleanly.
      for (const p of [...this.pairs]) {
        p.a.destroy();
        p.b?.destroy();
      }
      this.pairs.clear();
    }
    this.mode = 'forward';
  }

  async close(): Promise<void> {
    this.cut('reset');
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
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
