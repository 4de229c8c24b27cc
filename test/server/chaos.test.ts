/**
 * Chaos (issue 10): many writers and resuming watchers against a real server process that is
 * SIGKILLed at random moments while compaction runs every few hundred milliseconds (a 128 KiB
 * segment threshold). After every restart, before anyone writes again, every key is checked against
 * what was acknowledged; at the end every watcher must have seen every revision exactly once, in
 * order, never a reset, and each acknowledged write at its revision.
 *
 *   npm test:        20 kills (ROSTER_CHAOS_KILLS to change)
 *   npm run chaos:  100 kills
 *
 * Writers own their keys and run one operation at a time (puts of 16 B-1.5 KiB, some deletes), so
 * a key's state after a crash is either its last acknowledged operation or the one that was in
 * flight when the server died (retried after the restart until acknowledged). Watchers speak the
 * SSE protocol directly (not through the client library, which would hide a duplicate): they
 * resume with Last-Event-ID and check revision = previous + 1 for every event.
 */
import { get, type ClientRequest } from 'node:http';
import { afterAll, describe, expect, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { deferred, type Deferred } from '../../src/core/async.js';
import { SseParser } from '../../src/backends/remote/sse.js';
import { ServerProcess } from '../helpers/server.js';
import { eventually } from '../helpers/watch.js';

const KILLS = Number(process.env.ROSTER_CHAOS_KILLS ?? 20);
const WRITERS = 8;
const KEYS_PER_WRITER = 40;
const WATCHERS = 3;
const COMPACT_BYTES = 128 * 1024;

type Op = { type: 'put'; key: string; id: number; value: string } | { type: 'delete'; key: string; id: number };
/** What an acknowledged operation left: the revision and value id of a put, or absence. */
type KeyState = { rev: number; id: number } | { rev: number; id: undefined };

/** A watcher that resumes by Last-Event-ID and counts every irregularity. */
class ResumingWatcher {
  last = 0;
  /** `${key}|${type}|${op id}` by revision. */
  readonly events: string[] = [];
  gaps = 0;
  duplicates = 0;
  resets = 0;
  connects = 0;
  /** Streams that were answered (the first one plus every resume). */
  streams = 0;
  private req: ClientRequest | undefined;
  private stopped = false;

  constructor(private readonly url: string) {
    this.connect();
  }

  private connect(): void {
    if (this.stopped) return;
    this.connects++;
    const headers: Record<string, string> = { accept: 'text/event-stream' };
    const path = this.connects === 1 ? '/api/v1/watch?prefix=chaos/&fromRevision=0' : '/api/v1/watch?prefix=chaos/';
    if (this.connects > 1) headers['last-event-id'] = String(this.last);
    const again = () => {
      if (this.req !== req) return;
      this.req = undefined;
      setTimeout(() => this.connect(), 20);
    };
    const req = get(new URL(path, this.url), { headers, agent: false }, (res) => {
      if (res.statusCode === 200) this.streams++;
      const parser = new SseParser((event, data) => this.onEvent(event, JSON.parse(data) as Record<string, unknown>), () => undefined);
      res.on('data', (chunk: Buffer) => parser.push(chunk));
      res.on('end', again);
      res.on('error', again);
    });
    req.on('error', again);
    this.req = req;
  }

  private onEvent(event: string, data: Record<string, unknown>): void {
    if (event === 'reset' || event === 'snapshot') {
      // A snapshot would mean the resume was not honoured (or a first connect without fromRevision).
      this.resets++;
      this.last = data.revision as number;
      return;
    }
    if (event !== 'put' && event !== 'delete') return;
    const rev = data.revision as number;
    if (rev <= this.last) {
      this.duplicates++;
      return;
    }
    if (rev !== this.last + 1) this.gaps += rev - this.last - 1;
    this.last = rev;
    const value = event === 'put' ? (data.kv as { value: string }).value : '';
    this.events[rev] = `${data.key as string}|${event}|${event === 'put' ? value.slice(0, value.indexOf('.')) : ''}`;
  }

  stop(): void {
    this.stopped = true;
    this.req?.destroy();
  }
}

describe('chaos: writers and resuming watchers, random SIGKILLs, compaction every few hundred ms', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterAll(async () => {
    for (const c of cleanups.reverse()) await c();
  });

  it(`${KILLS} kills: 0 acknowledged writes lost, 0 watch events missed or duplicated`, async () => {
    const t0 = Date.now();
    const proc = await ServerProcess.start({ options: { storage: { compactBytes: COMPACT_BYTES, historyEvents: 20_000 } } });
    cleanups.push(() => proc.cleanup());
    // One client per writer, so their writes arrive independently (not coalesced into one batch)
    // and records are appended while earlier batches are being fsynced and compacted.
    const clients = await Promise.all(Array.from({ length: WRITERS }, () => RemoteBackend.open(proc.url, { connections: 1, requestTimeout: 10_000 })));
    cleanups.push(() => clients.forEach((c) => c.destroy()));
    const client = clients[0]!;
    const watchers = Array.from({ length: WATCHERS }, () => new ResumingWatcher(proc.url));
    cleanups.push(() => watchers.forEach((w) => w.stop()));

    const acked = new Map<string, KeyState>(); // by key: the last acknowledged operation's result
    const ackedOps = new Map<number, string>(); // by revision: `${key}|${type}|${id}`
    const inFlight = new Map<string, Op>(); // by key: the operation whose outcome a crash made unknown
    let nextId = 1;
    let ops = 0;
    let stopping = false;
    let down: Deferred<void> | undefined; // set while the server is down or being checked
    let parked = 0;

    const writer = async (w: number) => {
      const client = clients[w]!;
      const keys = Array.from({ length: KEYS_PER_WRITER }, (_, i) => `chaos/w${w}/k${i}`);
      let pending: Op | undefined;
      while (!stopping || pending) {
        if (down) {
          parked++;
          await down.promise;
          parked--;
        }
        if (!pending) {
          const key = keys[Math.floor(Math.random() * keys.length)]!;
          const id = nextId++;
          pending =
            acked.get(key)?.id !== undefined && Math.random() < 0.15
              ? { type: 'delete', key, id }
              : { type: 'put', key, id, value: `${id}.${'x'.repeat(16 + Math.floor(Math.random() * 1500))}` };
        }
        const op = pending;
        inFlight.set(op.key, op);
        try {
          if (op.type === 'put') {
            const r = await client.put(op.key, op.value);
            acked.set(op.key, { rev: r.revision, id: op.id });
            ackedOps.set(r.revision, `${op.key}|put|${op.id}`);
          } else {
            const r = await client.delete(op.key);
            acked.set(op.key, { rev: r.revision, id: undefined });
            if (r.deleted) ackedOps.set(r.revision, `${op.key}|delete|`);
          }
          inFlight.delete(op.key);
          pending = undefined;
          ops++;
          if (Math.random() < 0.5) await new Promise((r) => setTimeout(r, Math.random() * 2));
        } catch (e) {
          // The server died under the operation: it is retried once the server is back.
          if (!down) throw e;
        }
      }
    };

    const writers = Array.from({ length: WRITERS }, (_, w) => writer(w));
    let lost = 0;
    let compactions = 0;
    const lostKeys: string[] = [];
    const check = async () => {
      const have = new Map((await client.list('chaos/')).items.map((kv) => [kv.key, kv]));
      const keys = new Set([...acked.keys(), ...inFlight.keys()]);
      for (const key of keys) {
        const kv = have.get(key);
        const a = acked.get(key);
        const matchesAcked = a === undefined ? kv === undefined : a.id === undefined ? kv === undefined : kv?.modRevision === a.rev && kv.value.startsWith(`${a.id}.`);
        const u = inFlight.get(key);
        const matchesInFlight = u !== undefined && (u.type === 'delete' ? kv === undefined : kv?.value === u.value);
        if (!matchesAcked && !matchesInFlight) {
          lost++;
          lostKeys.push(`${key}: have ${kv ? `${kv.value.slice(0, 12)}@${kv.modRevision}` : 'nothing'}, acked ${JSON.stringify(a)}`);
        }
      }
    };

    const compacted = async () => Number(/^roster_compactions_total (\d+)$/m.exec(await fetch(`${proc.url}/metrics`).then((r) => r.text()))![1]);
    for (let kill = 0; kill < KILLS; kill++) {
      // Each server life includes a compaction (however slow the machine), then runs a random
      // while longer: compactions keep coming, so the kill lands anywhere, often inside one.
      await eventually(async () => (await compacted()) >= 1, 20_000, 'a compaction');
      await new Promise((r) => setTimeout(r, Math.random() * 500));
      compactions += await compacted().catch(() => 0);
      down = deferred<void>();
      await proc.kill('SIGKILL');
      await eventually(() => parked === WRITERS, 20_000, 'writers parked');
      await proc.start();
      await check();
      const gate = down;
      down = undefined;
      gate.resolve();
    }
    stopping = true;
    await Promise.all(writers);
    const metrics = await fetch(`${proc.url}/metrics`).then((r) => r.text());
    compactions += Number(/^roster_compactions_total (\d+)$/m.exec(metrics)![1]);
    const diskBytes = Number(/^roster_data_dir_bytes (\d+)$/m.exec(metrics)![1]);
    await check();
    const final = await client.list('chaos/');
    await eventually(() => watchers.every((w) => w.last >= final.revision), 30_000, `watchers to reach revision ${final.revision}`);
    const runtime = (Date.now() - t0) / 1000;

    // Every acknowledged operation is in every watcher's stream at its revision.
    let missed = 0;
    for (const w of watchers) for (const [rev, what] of ackedOps) if (w.events[rev] !== what) missed++;
    const summary = [
      `chaos: ${KILLS} kills in ${runtime.toFixed(1)} s; ${WRITERS} writers, ${WATCHERS} watchers, segment threshold ${COMPACT_BYTES / 1024} KiB`,
      `  acknowledged operations: ${ops} (revisions 1..${final.revision}); compactions: ${compactions}; data dir at the end: ${(diskBytes / 1024 / 1024).toFixed(1)} MiB`,
      `  lost acknowledged writes: ${lost}; watch events missed: ${missed + watchers.reduce((n, w) => n + w.gaps, 0)}, duplicated: ${watchers.reduce((n, w) => n + w.duplicates, 0)}, resets: ${watchers.reduce((n, w) => n + w.resets, 0)}; streams resumed per watcher: ${watchers.map((w) => w.streams - 1).join(', ')}`,
    ].join('\n');
    console.log(summary);
    expect(lostKeys.slice(0, 5), summary).toEqual([]);
    expect(lost).toBe(0);
    for (const w of watchers) {
      expect({ gaps: w.gaps, duplicates: w.duplicates, resets: w.resets }).toEqual({ gaps: 0, duplicates: 0, resets: 0 });
      expect(w.streams).toBeGreaterThan(KILLS);
    }
    expect(missed).toBe(0);
    expect(compactions).toBeGreaterThanOrEqual(KILLS);
  }, KILLS * 6000 + 60_000);
});
