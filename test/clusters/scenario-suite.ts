/**
 * The scenario tests for one engine (see scenarios.ts): in `npm test` one run each of leader-kill
 * and blackhole; with ROSTER_CLUSTER_FULL=1 all four scenarios, ROSTER_CLUSTER_RUNS times (5).
 * The results table is printed at the end, and appended as JSON lines to $ROSTER_CLUSTER_REPORT.
 */
import { appendFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cliAvailable, startCluster, type Cluster, type EngineName } from './harness.js';
import { runScenario, SCENARIOS, summarize, type RunResult } from './scenarios.js';
import { FULL, RUNS } from './env.js';

/**
 * How stale a cache (in-process or `roster watch`) may be behind a change the cluster already
 * has. The stated bounds: a silent etcd member is left at most 2.25 s after its last answer, a
 * silent ZooKeeper server at most 2.33 s after its last byte; the watch then resumes on another
 * member. The assertion leaves room for load on a 2-core machine shared by other test files.
 */
export const STALE_BOUND_MS = 4000;
/** Longest time a writer through the proxies may go without a successful write. */
export const FAILOVER_BOUND_MS = 4000;

export function scenarioSuite(engine: EngineName): void {
  describe(`${engine}: failure scenarios on a 3-member cluster, TTL 3 s`, () => {
    let c: Cluster;
    const results: RunResult[] = [];
    beforeAll(async () => {
      cliAvailable();
      c = await startCluster(engine);
    }, 120_000);
    afterAll(async () => {
      if (results.length > 0) {
        console.log(`\n${engine} scenarios:\n${summarize(results)}\n`);
        const path = process.env.ROSTER_CLUSTER_REPORT;
        if (path) for (const r of results) appendFileSync(path, JSON.stringify(r) + '\n');
      }
      await c?.close();
    }, 60_000);

    for (const sc of SCENARIOS) {
      const inNpmTest = sc.id === 'leader-kill' || sc.id === 'blackhole';
      const runs = FULL ? RUNS : 1;
      it.runIf(FULL || inNpmTest)(
        `${sc.id} (${runs}×): no registration lost, no CLI exits, caches stale < ${STALE_BOUND_MS} ms and never emptied, writes back within ${FAILOVER_BOUND_MS} ms`,
        async () => {
          for (let run = 0; run < runs; run++) {
            const r = await runScenario(c, sc, run);
            results.push(r);
            const ctx = `${engine} ${sc.id} run ${run}: ${JSON.stringify(r)}`;
            expect(r.lost, ctx).toEqual([]);
            expect(r.exited, ctx).toEqual([]);
            expect(r.cacheEmptied, ctx).toBe(0);
            expect(r.registrarLost, ctx).toBe(0);
            expect(r.sessionKept, ctx).toBe(true);
            expect(r.cacheStaleMs, ctx).toBeLessThan(STALE_BOUND_MS);
            expect(r.cliStaleMs, ctx).toBeLessThan(STALE_BOUND_MS);
            expect(r.failoverMs, ctx).toBeLessThan(FAILOVER_BOUND_MS);
          }
        },
        runs * 90_000,
      );
    }
  });
}
