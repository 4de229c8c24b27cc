/**
 * Curator's InterProcessMutex and LeaderLatch (test/interop/java/LockProbe.java, Debian's Curator
 * 5.4) beside roster's lock() and Election on the same ZooKeeper path. Every party loops: acquire
 * (or become leader), append "+<who>" to one shared log, hold, append "-<who>", release (resign).
 * Every line is one O_APPEND write, so the log is the real-time order of critical sections; a "+"
 * while another party is inside is an overlap (two lock holders, two leaders).
 *
 * Two Curator processes and two roster participants (each its own backend connection and
 * session) contend at once, so roster waits behind Curator, Curator behind roster, and roster
 * behind roster. This holds because roster's Lock and Election use Curator's node names and order
 * on ZooKeeper (src/recipes/line.ts); before that, roster's nodes (named by session id, ordered by
 * creation) overlapped Curator's 10-11 times in 15 + 15 sections (docs/interop.md).
 *
 * ROSTER_CURATOR_ITERATIONS sets the sections per party (default 40; the figures in the report
 * were measured with larger values too).
 */
import { appendFileSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ZooKeeperBackend } from '../../src/backends/zookeeper/index.js';
import { Election } from '../../src/recipes/election.js';
import { fixForSorting } from '../../src/recipes/line.js';
import { lock } from '../../src/recipes/lock.js';
import { buildJava, javaAvailable, LineProcess } from '../helpers/thirdparty.js';
import { startZooKeeper, zookeeperAvailable, type ZooKeeperServer } from '../helpers/zookeeper.js';

const ITERATIONS = Number(process.env.ROSTER_CURATOR_ITERATIONS ?? 40);
const HOLD_MS = 20;
const PARTIES = 2; // of each kind

let zk: ZooKeeperServer;
let classpath: string;
let dir: string;
const procs: LineProcess[] = [];
const backends: ZooKeeperBackend[] = [];

/** Overlapping critical sections in a "+X" / "-X" log, the most parties inside at once, and how
 *  many sections each party had. */
function overlaps(log: string): { overlaps: number; maxInside: number; sections: Record<string, number> } {
  const inside = new Set<string>();
  const sections: Record<string, number> = {};
  let n = 0;
  let maxInside = 0;
  for (const line of log.split('\n')) {
    if (line === '') continue;
    const who = line.slice(1);
    if (line.startsWith('+')) {
      if (inside.size > 0) n++;
      inside.add(who);
      maxInside = Math.max(maxInside, inside.size);
      sections[who] = (sections[who] ?? 0) + 1;
    } else inside.delete(who);
  }
  return { overlaps: n, maxInside, sections };
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

function curator(mode: 'mutex' | 'latch', path: string, log: string, label: string): LineProcess {
  const p = new LineProcess(`LockProbe ${mode} ${label}`, 'java', [
    '-Xshare:auto',
    '-XX:TieredStopAtLevel=1',
    '-cp',
    classpath,
    'roster.interop.LockProbe',
    zk.connectString,
    mode,
    path,
    log,
    String(ITERATIONS),
    String(HOLD_MS),
    label,
  ]);
  procs.push(p);
  return p;
}

/** Run PARTIES Curator loops (mutex or latch) and PARTIES roster loops (`mine(log, who)`) on one log. */
async function alongside(mode: 'mutex' | 'latch', path: string, mine: (log: string, who: string) => Promise<void>): Promise<ReturnType<typeof overlaps>> {
  const log = join(dir, `${mode}-${Math.random().toString(36).slice(2)}.log`);
  appendFileSync(log, '');
  const java = Array.from({ length: PARTIES }, (_, i) => curator(mode, path, log, `curator${i + 1}`));
  await Promise.all(java.map((j) => j.waitLine(/^ready$/, 60_000)));
  await Promise.all(Array.from({ length: PARTIES }, (_, i) => mine(log, `roster${i + 1}`)));
  await Promise.all(java.map((j) => j.waitLine(/^done$/, 180_000)));
  const r = overlaps(readFileSync(log, 'utf8'));
  console.log(`[curator-recipes] ${mode} on ${path}, ${ITERATIONS} sections per party, ${PARTIES} Curator + ${PARTIES} roster: ${JSON.stringify(r)}`);
  return r;
}

async function critical(log: string, who: string): Promise<void> {
  appendFileSync(log, `+${who}\n`);
  await pause(HOLD_MS);
  appendFileSync(log, `-${who}\n`);
}

async function participant(): Promise<{ backend: ZooKeeperBackend; session: Awaited<ReturnType<ZooKeeperBackend['session']>> }> {
  const backend = await ZooKeeperBackend.open(zk.url(''));
  backends.push(backend);
  return { backend, session: await backend.session({ ttl: 5000 }) };
}

const expected = () => Object.fromEntries(Array.from({ length: PARTIES }, (_, i) => [[`curator${i + 1}`, ITERATIONS], [`roster${i + 1}`, ITERATIONS]]).flat());

describe("Curator's order (StandardLockInternalsDriver.fixForSorting)", () => {
  it("sorts by the text after the last lock- / latch-, the whole name otherwise: an old roster node (a session id) lands after Curator's", () => {
    const sort = (children: string[], name: string) => [...children].sort((a, b) => (fixForSorting(a, name) < fixForSorting(b, name) ? -1 : 1));
    const curatorNode = '_c_6f1e4e0a-1b7e-4c55-9d43-8a3b4f3a2c11-lock-0000000001';
    expect(sort(['10000c9b2fd0003', curatorNode], 'lock-')).toEqual([curatorNode, '10000c9b2fd0003']);
    expect(sort(['_c_00000000-0000-4000-8000-000000000000-lock-0000000007', 'lock-0000000003'], 'lock-')).toEqual([
      'lock-0000000003',
      '_c_00000000-0000-4000-8000-000000000000-lock-0000000007',
    ]);
    expect(fixForSorting('_c_6f1e4e0a-1b7e-4c55-9d43-8a3b4f3a2c11-latch-0000000042', 'latch-')).toBe('0000000042');
    expect(fixForSorting('x-lock-lock-0000000005', 'lock-')).toBe('0000000005');
  });
});

describe.skipIf(!javaAvailable() || !zookeeperAvailable())('Curator InterProcessMutex / LeaderLatch beside roster lock / Election on one path', () => {
  beforeAll(async () => {
    [zk, classpath] = await Promise.all([startZooKeeper(), buildJava()]);
    dir = await mkdtemp(join(tmpdir(), 'roster-curator-recipes-'));
  }, 180_000);
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill()));
    await Promise.allSettled(backends.map((b) => b.close()));
    await zk?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('InterProcessMutex and roster lock() on /locks/job: never two holders; roster tokens rise', async () => {
    const parties = await Promise.all(Array.from({ length: PARTIES }, () => participant()));
    const tokens: number[] = [];
    const names = new Set<string>();
    const r = await alongside('mutex', '/locks/job', async (log, who) => {
      const { backend, session } = parties[Number(who.slice(-1)) - 1]!;
      for (let n = 0; n < ITERATIONS; n++) {
        const held = await lock(backend, session, 'job', { prefix: 'locks/job', value: who, signal: AbortSignal.timeout(60_000) });
        tokens.push(held.token);
        if (n % 10 === 0) for (const kv of (await backend.list('locks/job/')).items) names.add(kv.key.slice('locks/job/'.length).replace(/^_c_[0-9a-f-]{36}-/, '_c_<uuid>-').replace(/\d{10}$/, '<n>'));
        await critical(log, who);
        await held.unlock();
        await pause(1 + Math.random() * 9);
      }
    });
    await Promise.all(parties.map((p) => p.session.close()));
    expect(r.sections).toEqual(expected());
    expect(r.overlaps).toBe(0);
    expect(r.maxInside).toBe(1);
    // Fencing: each roster acquisition got a token above every earlier one, across both participants.
    expect(tokens).toHaveLength(PARTIES * ITERATIONS);
    for (let i = 1; i < tokens.length; i++) expect(tokens[i]!).toBeGreaterThan(tokens[i - 1]!);
    // One naming scheme in the directory: Curator's and roster's nodes alike.
    expect([...names]).toEqual(['_c_<uuid>-lock-<n>']);
  }, 300_000);

  it('LeaderLatch and roster Election on /elections/scheduler: never two leaders', async () => {
    const parties = await Promise.all(Array.from({ length: PARTIES }, () => participant()));
    const elections = parties.map((p) => new Election(p.backend, p.session, 'scheduler', { prefix: 'elections/scheduler' }));
    const seenLeaders = new Set<string>();
    const r = await alongside('latch', '/elections/scheduler', async (log, who) => {
      const election = elections[Number(who.slice(-1)) - 1]!;
      for (let n = 0; n < ITERATIONS; n++) {
        await election.campaign(who, { signal: AbortSignal.timeout(60_000) });
        // What roster reads as the leader is itself while it leads...
        expect((await election.leader())?.value).toBe(who);
        await critical(log, who);
        await election.resign();
        // ... and, while it waits, whoever leads: LeaderLatch's participant id is the node's data.
        const l = await election.leader();
        if (l) seenLeaders.add(l.value.replace(/\d$/, ''));
        await pause(1 + Math.random() * 9);
      }
    });
    await Promise.all(parties.map((p) => p.session.close()));
    expect(r.sections).toEqual(expected());
    expect(r.overlaps).toBe(0);
    expect(r.maxInside).toBe(1);
    expect(seenLeaders.has('curator')).toBe(true);
  }, 300_000);
});
