/**
 * Which cluster tests run:
 * - always (`npm test`): the fixtures' own tests, the client tests (silent endpoint at open,
 *   IPv6, a stalled etcd watch, ZooKeeper's deafAfter, one-shot calls through an outage, paged
 *   ranges, read-your-writes and ACL denials on ZooKeeper), the conformance suite on both
 *   clusters, one run of the leader-kill and blackhole scenarios per engine, a 30 s nemesis run
 *   per engine;
 * - ROSTER_CLUSTER_FULL=1: also the registry and recipes suites on both clusters, all four
 *   scenarios ROSTER_CLUSTER_RUNS times (default 5) and ROSTER_CLUSTER_RUNS nemesis runs of
 *   ROSTER_NEMESIS_SECONDS (default 60) per engine — about 11 minutes on 2 cores.
 * ROSTER_CLUSTER_REPORT=<file> appends every scenario and nemesis result as a JSON line;
 * ROSTER_CLUSTER_DATA=<dir> puts the clusters' data elsewhere than /dev/shm.
 */
import { existsSync } from 'node:fs';

export const FULL = process.env.ROSTER_CLUSTER_FULL === '1';
export const RUNS = Number(process.env.ROSTER_CLUSTER_RUNS ?? (FULL ? 5 : 1));
/** Cluster data on tmpfs when there is one: the tests exercise the client, not the disk. */
export const DATA_ROOT: string | undefined = process.env.ROSTER_CLUSTER_DATA ?? (existsSync('/dev/shm') ? '/dev/shm' : undefined);
