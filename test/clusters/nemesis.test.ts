/**
 * The nemesis run (nemesis.ts) on both engines: 30 s each in `npm test`; with
 * ROSTER_CLUSTER_FULL=1, ROSTER_CLUSTER_RUNS runs (5) of ROSTER_NEMESIS_SECONDS (60) each.
 * Figures are printed and appended as JSON lines to $ROSTER_CLUSTER_REPORT.
 */
import { appendFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startCluster, type Cluster, type EngineName } from './harness.js';
import { runNemesis, type NemesisResult } from './nemesis.js';
import { FULL, RUNS } from './env.js';

const SECONDS = Number(process.env.ROSTER_NEMESIS_SECONDS ?? (FULL ? 60 : 30));

for (const engine of ['etcd', 'zookeeper'] as EngineName[]) {
  describe(`${engine}: nemesis`, () => {
    let c: Cluster;
    const results: NemesisResult[] = [];
    beforeAll(async () => {
      c = await startCluster(engine);
    }, 120_000);
    afterAll(async () => {
      for (const r of results) console.log(`\n${engine} nemesis: ${JSON.stringify(r)}`);
      const path = process.env.ROSTER_CLUSTER_REPORT;
      if (path) for (const r of results) appendFileSync(path, JSON.stringify({ nemesis: true, ...r }) + '\n');
      await c?.close();
    }, 60_000);

    const runs = FULL ? RUNS : 1;
    it(
      `${runs}× ${SECONDS} s of leader kills, restarts, partitions and pauses: nothing lost, caches converge, fencing and single leadership hold`,
      async () => {
        for (let run = 0; run < runs; run++) {
          const r = await runNemesis(c, SECONDS * 1000);
          results.push(r);
          const ctx = `${engine} nemesis run ${run}: ${JSON.stringify(r)}`;
          expect(Object.values(r.faults).reduce((a, b) => a + b, 0), ctx).toBeGreaterThan(0);
          expect(r.missing, ctx).toEqual([]);
          expect(r.anchorDeletes, ctx).toBe(0);
          expect(r.registrarLost, ctx).toBe(0);
          // Nothing left behind by a register() or deregister() that failed ambiguously.
          expect(r.unexpected, ctx).toEqual([]);
          expect(r.unconverged, ctx).toBe(0);
          expect(r.cacheEmptied, ctx).toBe(0);
          expect(r.tokenRegressions, ctx).toBe(0);
          expect(r.duplicateTokens, ctx).toBe(0);
          expect(r.sharedTerms, ctx).toBe(0);
          expect(r.maxLeadersAtOnce, ctx).toBeLessThanOrEqual(1);
          expect(r.ops.lockAcquisitions, ctx).toBeGreaterThan(0);
          expect(r.ops.terms, ctx).toBeGreaterThan(0);
        }
      },
      // Setup, the final settle and each fault's wait for a healthy cluster (JVMs restarting) take
      // far longer on a loaded 2-core machine: a 30 s run took over 150 s beside the whole suite.
      runs * (SECONDS * 1000 + 240_000),
    );
  });
}
