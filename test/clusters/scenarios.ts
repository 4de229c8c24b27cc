/**
 * The failure scenarios of issue 18, on a 3-member cluster with every client behind the fixture's
 * proxies and every registration on a 3 s TTL:
 *
 *   leader-kill      kill -9 the leader, keep it down 4 s (longer than the TTL), start it again
 *   follower-kill    kill -9 the follower most clients are connected to, 4 s, start it again
 *   rolling-restart  SIGTERM each member in turn, start it, wait for a healthy cluster
 *   blackhole        the member most clients are connected to accepts connections and answers
 *                    nothing for 10 s (its proxy drops every byte), then heals
 *
 * Each run has, all through the proxies: an in-process Registrar (2 instances), an in-process
 * ServiceCache, two `roster register` processes and one `roster watch --json` process, a writer
 * putting a key every 100 ms; and around the proxies a ticker changing one instance of the service
 * every 200 ms plus a truth log of every put and delete.
 *
 * Measured per run: lost registrations (a key deleted from the cluster during the run, or missing
 * at its end), CLI processes that exited, the in-process cache's and the CLI watcher's worst lag
 * behind the ticker (the time they were stale), whether the cache ever emptied, the writer's
 * longest gap (the client's failover time), whether the registrar kept its session.
 */
import { Registrar, ServiceCache } from '../../src/registry/index.js';
import { toInstance } from '../../src/core/model.js';
import {
  busiest,
  Cli,
  LagMeter,
  layout,
  meterCache,
  meterCli,
  open,
  openTruth,
  sleep,
  Ticker,
  until,
  Writer,
  type Cluster,
} from './harness.js';

export const TTL_MS = 3000;
/** After the fault is over: longer than the TTL, so a lease lost during the fault shows. */
const SETTLE_MS = 4000;
const PREFIX = '/scn';

export interface Scenario {
  readonly id: 'leader-kill' | 'follower-kill' | 'rolling-restart' | 'blackhole';
  /** Inject the fault; resolve once it is over and the cluster is healthy again. */
  fault(c: Cluster, log: (what: string) => void): Promise<void>;
}

export const SCENARIOS: readonly Scenario[] = [
  {
    id: 'leader-kill',
    async fault(c, log) {
      const leader = await c.leader();
      log(`kill -9 leader ${leader.name}`);
      await leader.kill('SIGKILL');
      await sleep(4000);
      await leader.start({ wait: false });
      await c.waitHealthy();
      log(`${leader.name} back`);
    },
  },
  {
    id: 'follower-kill',
    async fault(c, log) {
      const leader = await c.leader();
      const victim = busiest(c, c.members.filter((m) => m !== leader));
      log(`kill -9 follower ${victim.name} (${victim.proxy?.connections} client connections)`);
      await victim.kill('SIGKILL');
      await sleep(4000);
      await victim.start({ wait: false });
      await c.waitHealthy();
      log(`${victim.name} back`);
    },
  },
  {
    id: 'rolling-restart',
    async fault(c, log) {
      for (const m of c.members) {
        log(`SIGTERM ${m.name}`);
        await m.kill('SIGTERM');
        await m.start({ wait: false });
        await c.waitHealthy();
        await sleep(1000);
      }
    },
  },
  {
    id: 'blackhole',
    async fault(c, log) {
      const victim = busiest(c);
      log(`blackhole ${victim.name} (${victim.proxy?.connections} client connections) for 10 s`);
      victim.proxy!.blackhole();
      await sleep(10_000);
      victim.proxy!.heal();
      log(`${victim.name} healed`);
    },
  },
];

export interface RunResult {
  engine: string;
  scenario: string;
  run: number;
  /** Registrations deleted during the run or missing at its end. */
  lost: string[];
  /** CLI processes that exited during the run (args and exit code). */
  exited: string[];
  /** Worst lag of the in-process cache behind the ticker during fault + settle, ms. */
  cacheStaleMs: number;
  /** Worst lag of the `roster watch` process, ms. */
  cliStaleMs: number;
  cacheEmptied: number;
  /** Longest time without a successful write through the proxies, ms. */
  failoverMs: number;
  /** Registrar 'lost' events, and whether its session id changed. */
  registrarLost: number;
  sessionKept: boolean;
  faultMs: number;
  log: string[];
}

export async function runScenario(c: Cluster, sc: Scenario, run: number): Promise<RunResult> {
  const t0 = Date.now();
  const log: string[] = [];
  const note = (what: string) => log.push(`${((Date.now() - t0) / 1000).toFixed(1)}s ${what}`);
  const service = `scn-${sc.id}-${run}-${Date.now().toString(36)}`;
  const url = c.url(PREFIX);
  const cleanup: (() => Promise<unknown> | unknown)[] = [];
  try {
    const truth = await openTruth(c, PREFIX, service);
    cleanup.push(() => truth.close());
    const ticker = new Ticker(truth.backend, service);
    await ticker.start();
    cleanup.push(() => ticker.stop());

    const regB = await open(c, PREFIX);
    cleanup.push(() => regB.close());
    const registrar = new Registrar(regB, { ttl: TTL_MS });
    cleanup.push(() => registrar.close());
    const own = ['lib-1', 'lib-2'].map((id, i) => toInstance({ service, id, address: '127.0.0.1', port: 7001 + i }));
    for (const i of own) await registrar.register(i);

    const cacheB = await open(c, PREFIX);
    cleanup.push(() => cacheB.close());
    const cache = await ServiceCache.open(cacheB, service);
    cleanup.push(() => cache.close());
    const cacheMeter = new LagMeter();
    const metered = meterCache(cache, cacheMeter);

    const writerB = await open(c, PREFIX);
    cleanup.push(() => writerB.close());
    const writer = new Writer(writerB, `writer/${service}`);
    writer.start();
    cleanup.push(() => writer.stop());

    const cliInst = [8001, 8002].map((port) => toInstance({ service, address: '127.0.0.1', port }));
    const registers = cliInst.map((i) => new Cli(['--backend', url, 'register', service, `127.0.0.1:${i.port}`, '--ttl', `${TTL_MS / 1000}s`]));
    const watcher = new Cli(['--backend', url, 'watch', service, '--json']);
    const clis = [...registers, watcher];
    cleanup.push(() => Promise.all(registers.map((p) => p.interrupt())));
    cleanup.push(() => watcher.kill());
    const cliMeter = new LagMeter();
    meterCli(watcher, cliMeter);
    await Promise.all(registers.map((p) => p.waitLine((l) => l.startsWith('registered'))));
    await watcher.waitLine((l) => l.includes('"synced"'));
    const keys = [...own, ...cliInst].map((i) => layout.key(i));
    await until('cache holds every registration', () => keys.every((k) => cache.instances.some((i) => layout.key(i) === k)));
    await until('both views follow the ticker', () => tickerSeqOf(cache) >= 2 && watcher.lines.some((l) => l.line.includes('"ticker"')));
    const sessionBefore = registrar.session?.id;
    const lostBefore = registrar.stats.lost;

    const faultStart = Date.now();
    await sc.fault(c, note);
    const faultEnd = Date.now();
    await sleep(SETTLE_MS);
    const end = Date.now();

    const present = await truth.present();
    const lost = keys.filter((k) => truth.log.deletes(k, faultStart, end).length > 0 || !present.has(k));
    const exited = clis.filter((p) => !p.running).map((p) => `${p.args.slice(2, 4).join(' ')} → exit ${p.exitCode ?? p.exitSignal} after ${((p.exitedAt! - faultStart) / 1000).toFixed(1)}s; ${p.stderr.trim().split('\n').slice(-2).join(' | ')}`);
    const max = (xs: number[]) => xs.reduce((a, b) => Math.max(a, b), 0);
    const result: RunResult = {
      engine: c.engine,
      scenario: sc.id,
      run,
      lost,
      exited,
      cacheStaleMs: max(cacheMeter.lags(ticker, faultStart, end - 1000)),
      cliStaleMs: max(cliMeter.lags(ticker, faultStart, end - 1000)),
      cacheEmptied: metered.emptied.length,
      failoverMs: writer.longestGap(faultStart, faultEnd),
      registrarLost: registrar.stats.lost - lostBefore,
      sessionKept: registrar.session?.id === sessionBefore,
      faultMs: faultEnd - faultStart,
      log,
    };
    metered.off();
    return result;
  } finally {
    for (const f of cleanup.reverse()) await Promise.resolve().then(f).catch(() => undefined);
  }
}

function tickerSeqOf(cache: ServiceCache): number {
  const t = cache.instances.find((i) => i.id === 'ticker');
  return t ? Number(t.metadata.seq ?? 0) : 0;
}

/** One table row per scenario × engine: runs, lost, exited, stale p50/max, failover p50/max. */
export function summarize(results: readonly RunResult[]): string {
  const groups = new Map<string, RunResult[]>();
  for (const r of results) {
    const k = `${r.scenario} | ${r.engine}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  const p = (xs: number[], q: number) => {
    const s = [...xs].sort((a, b) => a - b);
    return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))]! : 0;
  };
  const rows = ['| scenario | engine | runs | lost regs | exited CLIs | cache stale p50 / max ms | CLI watch stale p50 / max ms | cache emptied | writer failover p50 / max ms | registrar lost / session kept |', '|---|---|---|---|---|---|---|---|---|---|'];
  for (const [k, rs] of groups) {
    const cs = rs.map((r) => r.cacheStaleMs);
    const ws = rs.map((r) => r.cliStaleMs);
    const fs = rs.map((r) => r.failoverMs);
    rows.push(
      `| ${k} | ${rs.length} | ${rs.reduce((a, r) => a + r.lost.length, 0)} | ${rs.reduce((a, r) => a + r.exited.length, 0)} | ${p(cs, 0.5)} / ${Math.max(...cs)} | ${p(ws, 0.5)} / ${Math.max(...ws)} | ${rs.reduce((a, r) => a + r.cacheEmptied, 0)} | ${p(fs, 0.5)} / ${Math.max(...fs)} | ${rs.reduce((a, r) => a + r.registrarLost, 0)} / ${rs.filter((r) => r.sessionKept).length} of ${rs.length} |`,
    );
  }
  return rows.join('\n');
}
