/**
 * Which cluster tests run (see README in this folder):
 * - always (`npm test`): the fixtures' own tests, the conformance suite on both clusters, one short
 *   run of each failure scenario per engine and a short nemesis run, where they pass today;
 * - ROSTER_CLUSTER_FULL=1: the registry and recipes suites on both clusters, every scenario
 *   repeated (ROSTER_CLUSTER_RUNS, default 5) and the long nemesis run;
 * - ROSTER_CLUSTER_WIP=1: tests that fail on today's code because of fixes the redesign must land
 *   first (listed in the report); kept so they can be switched on once the fix is in.
 */
import { existsSync } from 'node:fs';

export const FULL = process.env.ROSTER_CLUSTER_FULL === '1';
export const WIP = process.env.ROSTER_CLUSTER_WIP === '1';
export const RUNS = Number(process.env.ROSTER_CLUSTER_RUNS ?? (FULL ? 5 : 1));
/** Cluster data on tmpfs when there is one: the tests exercise the client, not the disk. */
export const DATA_ROOT: string | undefined = process.env.ROSTER_CLUSTER_DATA ?? (existsSync('/dev/shm') ? '/dev/shm' : undefined);
