/**
 * Failure is loud and bounded: every command that needs the backend, against an unreachable
 * roster server, etcd and ZooKeeper (`-b http://127.0.0.1:9`, `etcd://127.0.0.1:9`,
 * `zk://127.0.0.1:9`: nothing listens on port 9), exits 3 within its --connect-timeout with one
 * line naming the backend, and never runs what it guards (`lock -- cmd`).
 */
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireBuilt, run, type RunResult } from '../helpers/cli.js';

const CONNECT_TIMEOUT_MS = 1000;
/** Process start (~0.3-1 s under load) and the backend's own unwinding on top of the timeout. */
const SLACK_MS = 4000;

describe('every command against an unreachable backend: exit 3 within --connect-timeout, one line', () => {
  let dir: string;
  beforeAll(async () => {
    requireBuilt();
    dir = await mkdtemp(join(tmpdir(), 'roster-unreach-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const commands = (marker: string): string[][] => [
    ['ls'],
    ['ls', 'orders'],
    ['watch', 'orders'],
    ['pick', 'orders'],
    ['register', 'orders', '127.0.0.1:9001'],
    ['deregister', 'orders', '127.0.0.1:9001'],
    ['kv', 'get', 'a'],
    ['kv', 'get', 'a/', '--prefix'],
    ['kv', 'put', 'a', 'b'],
    ['kv', 'put', 'a', 'b', '--ttl', '10s'],
    ['kv', 'del', 'a'],
    ['kv', 'ls'],
    ['kv', 'watch', 'a/'],
    ['lock', 'x', '--', 'sh', '-c', `echo ran > ${marker}`],
    ['elect', 'x', 'v'],
    ['elect', '--observe', 'x'],
  ];

  for (const backend of ['http://127.0.0.1:9', 'etcd://127.0.0.1:9', 'zk://127.0.0.1:9']) {
    it(backend, async () => {
      const marker = join(dir, `ran-${backend.split(':')[0]}`);
      const cmds = commands(marker);
      // Four at a time (2 cores): each is its own process with its own deadline.
      const results: RunResult[] = [];
      for (let i = 0; i < cmds.length; i += 4) {
        results.push(...(await Promise.all(cmds.slice(i, i + 4).map((args) => run(['-b', backend, '--connect-timeout', `${CONNECT_TIMEOUT_MS}ms`, ...args])))));
      }
      const report: string[] = [];
      results.forEach((r, i) => {
        const what = `${backend} ${cmds[i]!.join(' ')}`;
        report.push(`${what}: exit ${r.code} in ${r.ms.toFixed(0)} ms: ${r.stderr.trim()}`);
        expect(r.code, `${what}: ${r.stderr}`).toBe(3);
        expect(r.stdout, what).toBe('');
        const lines = r.stderr.trim().split('\n');
        expect(lines, what).toHaveLength(1);
        expect(lines[0], what).toMatch(/^roster: .*\[UNAVAILABLE\]$/);
        expect(lines[0], what).toContain('127.0.0.1:9');
        expect(r.ms, what).toBeLessThan(CONNECT_TIMEOUT_MS + SLACK_MS);
      });
      console.log(report.join('\n'));
      await expect(stat(marker)).rejects.toMatchObject({ code: 'ENOENT' }); // lock never ran its command
    }, 60_000);
  }
});
