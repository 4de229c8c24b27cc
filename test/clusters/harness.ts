/**
 * What the cluster scenario and nemesis tests share: one interface over the two fixtures (etcd
 * cluster, ZooKeeper ensemble), `roster` CLI processes, and the probes that measure what users feel
 * (a ticker whose changes caches must follow, a writer whose gaps are the client's failover time,
 * a truth log read around the proxies). Only the public API is used: openBackend, Registrar,
 * ServiceCache, the recipes, and the CLI as a process.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { openBackend } from '../../src/index.js';
import type { Backend } from '../../src/contract/types.js';
import { rosterLayout } from '../../src/registry/layout.js';
import type { ServiceCache } from '../../src/registry/cache.js';
import { toInstance } from '../../src/core/model.js';
import { EtcdCluster, ZooKeeperEnsemble, type TcpProxy } from '../../src/testing/index.js';
import { DATA_ROOT } from './env.js';

export type EngineName = 'etcd' | 'zookeeper';

export interface Member {
  readonly name: string;
  readonly proxy: TcpProxy | undefined;
  readonly running: boolean;
  kill(signal?: NodeJS.Signals): Promise<void>;
  start(opts?: { wait?: boolean }): Promise<void>;
  pause(): void;
  resume(): void;
}

/** The two fixtures behind one face. */
export interface Cluster {
  readonly engine: EngineName;
  readonly members: readonly Member[];
  /** Backend options for every client (ZooKeeper: request deadline). */
  readonly options: Record<string, unknown>;
  /** Through the proxies, every member listed. */
  url(prefix: string): string;
  /** Around the proxies (the truth, unaffected by a cut). */
  directUrl(prefix: string): string;
  leader(): Promise<Member>;
  waitHealthy(): Promise<void>;
  close(): Promise<void>;
}

export async function startCluster(engine: EngineName): Promise<Cluster> {
  const dataRoot = DATA_ROOT ? { dataRoot: DATA_ROOT } : {};
  if (engine === 'etcd') {
    const c = await EtcdCluster.start(dataRoot);
    return {
      engine,
      members: c.members,
      options: {},
      url: (p) => c.url(p),
      directUrl: (p) => c.directUrl(p),
      leader: () => c.leader(),
      waitHealthy: () => c.waitHealthy(),
      close: () => c.close(),
    };
  }
  const z = await ZooKeeperEnsemble.start({ tickTime: 200, ...dataRoot });
  return {
    engine,
    members: z.members,
    options: { requestTimeout: 5000 },
    url: (p) => z.url(p),
    directUrl: (p) => z.directUrl(p),
    leader: () => z.leader(),
    waitHealthy: () => z.waitHealthy(),
    close: () => z.close(),
  };
}

/** The member most client connections go through (the one whose failure hurts most). */
export function busiest(c: Cluster, among: readonly Member[] = c.members): Member {
  return [...among].sort((a, b) => (b.proxy?.connections ?? 0) - (a.proxy?.connections ?? 0))[0]!;
}

// ------------------------------------------------------------------ CLI processes

const BIN = fileURLToPath(new URL('../../dist/cli/bin.js', import.meta.url));

export function cliAvailable(): void {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` first (npm test does)`);
}

/** A `roster` CLI process; stdout lines are kept with their arrival time. */
export class Cli {
  readonly child: ChildProcess;
  readonly lines: { line: string; at: number }[] = [];
  stderr = '';
  exitCode: number | null | undefined;
  exitSignal: NodeJS.Signals | null = null;
  exitedAt: number | undefined;
  readonly exited: Promise<void>;
  private waiters: (() => void)[] = [];
  /** Called with each stdout line as it arrives. */
  onLine: ((line: string, at: number) => void) | undefined;

  constructor(readonly args: string[]) {
    this.child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let buf = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      const at = Date.now();
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        this.lines.push({ line, at });
        this.onLine?.(line, at);
      }
      for (const w of this.waiters.splice(0)) w();
    });
    this.child.stderr!.on('data', (d: Buffer) => (this.stderr = (this.stderr + d.toString()).slice(-8000)));
    this.exited = new Promise((resolve) =>
      this.child.on('exit', (code, signal) => {
        this.exitCode = code;
        this.exitSignal = signal;
        this.exitedAt = Date.now();
        for (const w of this.waiters.splice(0)) w();
        resolve();
      }),
    );
  }

  get running(): boolean {
    return this.exitedAt === undefined;
  }

  async waitLine(pred: (l: string) => boolean, timeoutMs = 20_000): Promise<{ line: string; at: number }> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = this.lines.find((l) => pred(l.line));
      if (hit) return hit;
      if (!this.running) throw new Error(`roster ${this.args.join(' ')} exited (${this.exitCode ?? this.exitSignal}) before the expected line; stderr: ${this.stderr}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`roster ${this.args.join(' ')}: no matching line within ${timeoutMs} ms; stderr: ${this.stderr}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
  }

  /** SIGINT (Ctrl-C) and wait for the exit (bounded, then SIGKILL). */
  async interrupt(timeoutMs = 10_000): Promise<void> {
    if (!this.running) return;
    this.child.kill('SIGINT');
    const t = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    await this.exited;
    clearTimeout(t);
  }

  kill(): void {
    if (this.running) this.child.kill('SIGKILL');
  }
}

// ------------------------------------------------------------------ probes

export const layout = rosterLayout();

/**
 * Writes a persistent "ticker" instance of `service` every `everyMs` through a backend that the
 * faults do not touch, with metadata seq = 1, 2, ...; `ackedAt[seq]` is when the write returned.
 * A cache (or CLI watcher) of the service shows how late it is by the seq it holds.
 */
export class Ticker {
  readonly ackedAt: number[] = [];
  seq = 0;
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly backend: Backend,
    readonly service: string,
    private readonly everyMs = 200,
  ) {}

  key(): string {
    return layout.key(this.instance(0));
  }

  private instance(seq: number) {
    return toInstance({ service: this.service, id: 'ticker', address: '127.0.0.1', port: 1, metadata: { seq: String(seq) } });
  }

  /** Write seq 1 and return once it is acknowledged; then keep ticking in the background. */
  async start(): Promise<void> {
    await this.tick();
    this.loop = (async () => {
      while (!this.stopped) {
        await new Promise((r) => setTimeout(r, this.everyMs));
        if (this.stopped) return;
        await this.tick().catch(() => undefined); // an outage of the truth path: the next tick retries
      }
    })();
  }

  private async tick(): Promise<void> {
    const seq = this.seq + 1;
    const inst = this.instance(seq);
    await this.backend.put(layout.key(inst), layout.encode(inst));
    this.seq = seq;
    this.ackedAt[seq] = Date.now();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

/** The ticker seq an instance list holds (0 if none). */
export function tickerSeq(instances: readonly { id: string; metadata: Readonly<Record<string, string>> }[]): number {
  const t = instances.find((i) => i.id === 'ticker');
  return t ? Number(t.metadata.seq ?? 0) : 0;
}

/**
 * Follows how late a view is: `seen(seq, at)` records the first time a seq was visible. Lag of a
 * tick = first time the view held it (or a later one) − when its write was acknowledged.
 */
export class LagMeter {
  private readonly firstSeen: number[] = [];
  private high = 0;

  seen(seq: number, at = Date.now()): void {
    for (let s = this.high + 1; s <= seq; s++) this.firstSeen[s] = at;
    if (seq > this.high) this.high = seq;
  }

  /** Lag of every tick acknowledged in [from, to]; a tick never seen counts until `now`. */
  lags(ticker: Ticker, from: number, to: number, now = Date.now()): number[] {
    const out: number[] = [];
    for (let s = 1; s < ticker.ackedAt.length; s++) {
      const a = ticker.ackedAt[s];
      if (a === undefined || a < from || a > to) continue;
      out.push(Math.max(0, (this.firstSeen[s] ?? now) - a));
    }
    return out;
  }
}

/** Follow a ServiceCache into a LagMeter; also notes whether it ever emptied. */
export function meterCache(cache: ServiceCache, meter: LagMeter): { emptied: number[]; off: () => void } {
  const emptied: number[] = [];
  meter.seen(tickerSeq(cache.instances));
  const off = cache.on('change', (ch) => {
    meter.seen(tickerSeq(ch.instances));
    if (ch.instances.length === 0) emptied.push(Date.now());
  });
  return { emptied, off };
}

/** Follow a `roster watch --json` process into a LagMeter. */
export function meterCli(cli: Cli, meter: LagMeter): void {
  const onLine = (line: string, at: number) => {
    if (!line.startsWith('{')) return;
    try {
      const ev = JSON.parse(line) as { type: string; instance?: { id: string; metadata: Record<string, string> } };
      if ((ev.type === 'add' || ev.type === 'update') && ev.instance?.id === 'ticker') meter.seen(Number(ev.instance.metadata.seq ?? 0), at);
    } catch {
      // not a JSON event line: ignore
    }
  };
  for (const l of cli.lines) onLine(l.line, l.at);
  cli.onLine = onLine;
}

/**
 * Puts one key every `everyMs` through the backend under test (the proxies); the longest time
 * without a successful write during a fault is the client's failover time.
 */
export class Writer {
  readonly okAt: number[] = [];
  readonly errors: { at: number; code: string }[] = [];
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(
    private readonly backend: Backend,
    private readonly key: string,
    private readonly everyMs = 100,
  ) {}

  start(): void {
    this.loop = (async () => {
      let i = 0;
      while (!this.stopped) {
        try {
          await this.backend.put(this.key, String(i++));
          this.okAt.push(Date.now());
        } catch (e) {
          this.errors.push({ at: Date.now(), code: (e as { code?: string }).code ?? String(e) });
        }
        await new Promise((r) => setTimeout(r, this.everyMs));
      }
    })();
  }

  /** Longest interval in [from, to] without a successful write. */
  longestGap(from: number, to: number): number {
    let prev = from;
    let gap = 0;
    for (const t of this.okAt) {
      if (t < from) continue;
      if (t > to) break;
      gap = Math.max(gap, t - prev);
      prev = t;
    }
    return Math.max(gap, (this.okAt.find((t) => t > to) ?? to) - prev);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
  }
}

/**
 * Every put and delete under `prefix` as the cluster itself saw them (read around the proxies).
 * `deletes(key)` are the times a key vanished: for a registration that should have lived, a loss.
 */
export class TruthLog {
  readonly events: { at: number; type: 'put' | 'delete'; key: string; session?: string }[] = [];
  private readonly ac = new AbortController();
  private done: Promise<void> | undefined;
  synced = false;

  constructor(
    private readonly backend: Backend,
    private readonly prefix: string,
  ) {}

  async start(): Promise<void> {
    let resolveSynced!: () => void;
    const synced = new Promise<void>((r) => (resolveSynced = r));
    this.done = (async () => {
      try {
        for await (const ev of this.backend.watch(this.prefix, { signal: this.ac.signal })) {
          if (ev.type === 'synced') {
            this.synced = true;
            resolveSynced();
          } else if (ev.type === 'put') this.events.push({ at: Date.now(), type: 'put', key: ev.key, ...(ev.kv.session ? { session: ev.kv.session } : {}) });
          else if (ev.type === 'delete') this.events.push({ at: Date.now(), type: 'delete', key: ev.key });
          else if (ev.type === 'reset') throw new Error(`truth log got a reset at ${ev.revision}: history was lost`);
        }
      } catch (e) {
        if (!this.ac.signal.aborted) throw e;
      }
    })();
    await Promise.race([synced, this.done]);
  }

  deletes(key: string, from = 0, to = Infinity): number[] {
    return this.events.filter((e) => e.type === 'delete' && e.key === key && e.at >= from && e.at <= to).map((e) => e.at);
  }

  async stop(): Promise<void> {
    this.ac.abort();
    await this.done;
  }
}

/** The truth of a run: a backend around the proxies and the TruthLog of one service over it. */
export interface Truth {
  /** Around the proxies: the run's own reads at its end (and the ticker's writes). */
  readonly backend: Backend;
  readonly log: TruthLog;
  /** The service's keys the cluster holds now (read around the proxies). */
  present(): Promise<Set<string>>;
  /** Stop the log, then close the backend. */
  close(): Promise<void>;
}

/**
 * Open the truth of a run over `service`'s instances under `prefix`: a backend around the proxies
 * and a TruthLog on it, returned once the log is synced (so every later change is in it). If the
 * log cannot start, the backend is closed before the error is thrown.
 */
export async function openTruth(c: Cluster, prefix: string, service: string): Promise<Truth> {
  const backend = await open(c, prefix, true);
  const log = new TruthLog(backend, layout.servicePrefix(service));
  try {
    await log.start();
  } catch (e) {
    await backend.close().catch(() => undefined);
    throw e;
  }
  return {
    backend,
    log,
    present: async () => new Set((await backend.list(layout.servicePrefix(service))).items.map((kv) => kv.key)),
    close: async () => {
      try {
        await log.stop();
      } finally {
        await backend.close();
      }
    },
  };
}

export async function open(c: Cluster, prefix: string, direct = false): Promise<Backend> {
  return openBackend(direct ? c.directUrl(prefix) : c.url(prefix), c.options);
}

export function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Wait for `cond` (bounded): a real condition polled, the interval only paces the question. */
export async function until(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeoutMs} ms`);
    await sleep(25);
  }
}

export function percentile(xs: readonly number[], p: number): number {
  if (xs.length === 0) return 0;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}
