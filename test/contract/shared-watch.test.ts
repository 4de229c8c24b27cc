/**
 * SharedWatches (contract/shared-watch.ts) with an upstream the test drives event by event (a
 * WatchStream, as a backend feeds it), so that a watcher can join at any point of the upstream's
 * life: in the middle of its snapshot (mirror not empty, not yet synced), during an outage, between
 * a reset and its synced. Every watcher must end with a complete, consistent view: each key once
 * before `synced`, then every later event once, in order; a reset and the outage edges reach every
 * watcher; a watcher leaving disturbs nobody, and the upstream closes when the last one leaves.
 * (The same over real HTTP: test/backends/remote-shared-watch.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { SharedWatches } from '../../src/contract/shared-watch.js';
import { WatchStream } from '../../src/contract/stream.js';
import type { WatchStatus } from '../../src/contract/types.js';
import type { KeyValue, WatchEvent } from '../../src/core/kv.js';
import { UnavailableError } from '../../src/core/errors.js';

const PREFIX = 'svc/';

const kv = (key: string, value: string, rev: number): KeyValue => ({ key: PREFIX + key, value, createRevision: rev, modRevision: rev, version: 1 });
const put = (key: string, value: string, rev: number, snapRev = rev): WatchEvent => ({ type: 'put', key: PREFIX + key, kv: kv(key, value, rev), revision: snapRev });
const del = (key: string, rev: number): WatchEvent => ({ type: 'delete', key: PREFIX + key, revision: rev });
const synced = (rev: number): WatchEvent => ({ type: 'synced', revision: rev });

/** Let the hub's pump and every subscriber's reader run. */
const flush = async () => {
  for (let i = 0; i < 3; i++) await new Promise<void>((r) => setImmediate(r));
};

/** A subscriber and everything it has received so far. */
interface Sub {
  name: string;
  stream: WatchStream;
  events: WatchEvent[];
  statuses: boolean[];
  /** How its iteration ended: 'open' while it runs, 'done', or the error thrown. */
  ended: 'open' | 'done' | unknown;
}

function setup() {
  const upstreams: { stream: WatchStream; stopped: boolean }[] = [];
  const shared = new SharedWatches(() => {
    const u = { stream: new WatchStream(undefined, { keepProcessAlive: false }), stopped: false };
    u.stream.onStop(() => (u.stopped = true));
    upstreams.push(u);
    return u.stream;
  });
  const join = (name: string, signal?: AbortSignal): Sub => {
    const stream = new WatchStream(signal, { keepProcessAlive: false });
    const sub: Sub = { name, stream, events: [], statuses: [], ended: 'open' };
    stream.on('status', (st: WatchStatus) => sub.statuses.push(st.connected));
    shared.join(PREFIX, stream);
    void (async () => {
      try {
        for await (const ev of stream) sub.events.push(ev);
        sub.ended = 'done';
      } catch (e) {
        sub.ended = e;
      }
    })();
    return sub;
  };
  const up = () => upstreams.at(-1)!.stream;
  return { shared, upstreams, join, up };
}

/**
 * Check `events` as one watcher's stream and return its view: before the first `synced` each key
 * at most once (a snapshot), at one revision; after it, revisions never go back. A `reset`
 * replaces the view.
 */
function view(name: string, events: WatchEvent[]): { state: Map<string, string>; syncedAt: number[] } {
  const state = new Map<string, string>();
  const syncedAt: number[] = [];
  let inSnapshot = true;
  let last = 0;
  for (const ev of events) {
    if (ev.type === 'put') {
      if (inSnapshot) expect(state.has(ev.key), `${name}: ${ev.key} twice in its snapshot`).toBe(false);
      else expect(ev.revision, `${name}: ${ev.key} went back`).toBeGreaterThan(last);
      state.set(ev.key, ev.kv.value);
    } else if (ev.type === 'delete') {
      expect(inSnapshot, `${name}: a delete in its snapshot`).toBe(false);
      expect(ev.revision).toBeGreaterThan(last);
      expect(state.delete(ev.key), `${name}: delete of ${ev.key}, not in its view`).toBe(true);
    } else if (ev.type === 'reset') {
      state.clear();
      for (const k of ev.items) state.set(k.key, k.value);
    } else {
      syncedAt.push(ev.revision);
      inSnapshot = false;
    }
    if (!inSnapshot || ev.type === 'reset') last = Math.max(last, ev.revision);
  }
  return { state, syncedAt };
}

/** A watcher's events as short text: `put k2@13`, `synced @13`. */
const shown = (s: Sub) => s.events.map((e) => `${e.type} ${'key' in e ? e.key.slice(PREFIX.length) : ''}@${e.revision}`);

const sorted = (m: Map<string, string>) => [...m].sort(([a], [b]) => (a < b ? -1 : 1));

describe('SharedWatches over a driven upstream', () => {
  it('a watcher joining in the middle of the upstream snapshot gets a complete view: no key missed or repeated, then every event once', async () => {
    const { shared, upstreams, join, up } = setup();
    const a = join('first');
    expect(upstreams).toHaveLength(1);
    const early = join('before-any-event'); // the upstream has delivered nothing yet
    // The upstream's snapshot at revision 10, one event at a time.
    up().push(put('k1', 'a', 3, 10));
    up().push(put('k2', 'b', 4, 10));
    await flush();
    const mid = join('mid-snapshot'); // mirror {k1, k2}, not synced
    up().push(put('k3', 'c', 7, 10));
    await flush();
    const mid2 = join('mid-snapshot-2'); // mirror {k1, k2, k3}, not synced
    up().push(synced(10));
    await flush();
    const after = join('after-sync');
    // Live events.
    const live = [put('k4', 'd', 11), del('k1', 12), put('k2', 'b2', 13), put('k5', 'e', 14), del('k4', 15)];
    let betweenLive: Sub | undefined;
    for (const [i, ev] of live.entries()) {
      up().push(ev);
      if (i === 2) {
        await flush();
        betweenLive = join('between-live');
      }
    }
    await flush();
    expect(upstreams).toHaveLength(1);
    expect(shared.size).toBe(1);

    const want = new Map([
      [`${PREFIX}k2`, 'b2'],
      [`${PREFIX}k3`, 'c'],
      [`${PREFIX}k5`, 'e'],
    ]);
    const snapshot = [`${PREFIX}k1`, `${PREFIX}k2`, `${PREFIX}k3`];
    for (const s of [a, early, mid, mid2, after]) {
      const v = view(s.name, s.events);
      expect(v.syncedAt, s.name).toEqual([10]);
      const cut = s.events.findIndex((e) => e.type === 'synced');
      // Its snapshot: the store at revision 10, every key once, all at revision 10.
      expect(
        s.events
          .slice(0, cut)
          .map((e) => (e.type === 'put' ? e.key : e.type))
          .sort(),
        s.name,
      ).toEqual(snapshot);
      expect(s.events.slice(0, cut).every((e) => e.revision === 10), s.name).toBe(true);
      // Then exactly the live events, in order.
      expect(s.events.slice(cut + 1), s.name).toEqual(live);
      expect(sorted(v.state), s.name).toEqual(sorted(want));
    }
    // Joined while following: the state at revision 13 as its snapshot, then the rest.
    const bl = betweenLive!;
    expect(shown(bl)).toEqual(['put k2@13', 'put k3@13', 'put k4@13', 'synced @13', 'put k5@14', 'delete k4@15']);
    expect(sorted(view(bl.name, bl.events).state)).toEqual(sorted(want));

    // Joiners in a row share one sorted copy of the mirror, until the mirror changes (a delete).
    const late1 = join('late-1');
    up().push(del('k5', 16));
    await flush();
    const late2 = join('late-2');
    await flush();
    expect(shown(late1)).toEqual(['put k2@15', 'put k3@15', 'put k5@15', 'synced @15', 'delete k5@16']);
    expect(shown(late2)).toEqual(['put k2@16', 'put k3@16', 'synced @16']);
  });

  it('an outage and a reset reach every watcher; joiners during the outage and between the reset and its synced see the state after it', async () => {
    const { join, up } = setup();
    const a = join('a');
    const b = join('b');
    up().push(put('k1', 'a', 3, 5));
    up().push(put('k2', 'b', 4, 5));
    up().push(synced(5));
    up().push(put('k3', 'c', 6));
    await flush();
    // The upstream's connection drops.
    const error = new UnavailableError('connection reset');
    up().status({ connected: false, error });
    await flush();
    const during = join('during-outage');
    await flush();
    // It comes back after a compaction: the history it needs is gone, so the view is replaced.
    up().status({ connected: true });
    const reset: WatchEvent = { type: 'reset', revision: 20, items: [kv('k2', 'b2', 18), kv('k7', 'g', 19)] };
    up().push(reset);
    await flush();
    const between = join('between-reset-and-synced');
    up().push(synced(20));
    up().push(put('k8', 'h', 21));
    await flush();
    const after = join('after');
    await flush();

    const want = [
      [`${PREFIX}k2`, 'b2'],
      [`${PREFIX}k7`, 'g'],
      [`${PREFIX}k8`, 'h'],
    ];
    for (const s of [a, b, during, between, after]) expect(sorted(view(s.name, s.events).state), s.name).toEqual(want);
    // The watchers that were there before the reset got it, then its synced, then the next event.
    for (const s of [a, b, during]) {
      const i = s.events.indexOf(reset);
      expect(i, s.name).toBeGreaterThan(0);
      expect(s.events.slice(i + 1).map((e) => `${e.type}@${e.revision}`), s.name).toEqual(['synced@20', 'put@21']);
    }
    // The one that joined during the outage started from the state before it.
    expect(view('during', during.events.slice(0, during.events.indexOf(reset))).syncedAt).toEqual([6]);
    // The one between the reset and its synced: the reset's items as its snapshot, then synced@20.
    expect(between.events.map((e) => `${e.type}@${e.revision}`)).toEqual(['put@20', 'put@20', 'synced@20', 'put@21']);
    expect(view('between', between.events).syncedAt).toEqual([20]);
    // Every watcher there during the outage was told of it, once, and of its end.
    for (const s of [a, b, during]) expect(s.statuses, s.name).toEqual([false, true]);
    for (const s of [between, after]) expect(s.statuses, s.name).toEqual([]);
  });

  it('a watcher leaving (abort, close, break) disturbs nobody; the upstream closes when the last one leaves, and the next joiner opens a new one', async () => {
    const { shared, upstreams, join, up } = setup();
    const ac = new AbortController();
    const a = join('aborted', ac.signal);
    const b = join('closed');
    const c = join('broken');
    up().push(put('k1', 'a', 3, 3));
    up().push(synced(3));
    await flush();

    ac.abort(new Error('caller gave up'));
    up().push(put('k2', 'b', 4));
    await flush();
    expect(a.ended).toBe(ac.signal.reason);
    expect(upstreams[0]!.stopped).toBe(false);
    for (const s of [b, c]) expect(s.events.at(-1), s.name).toEqual(put('k2', 'b', 4));

    b.stream.close();
    up().push(put('k3', 'c', 5));
    await flush();
    expect(b.ended).toBe('done');
    expect(b.events.at(-1)).toEqual(put('k2', 'b', 4));
    expect(c.events.at(-1)).toEqual(put('k3', 'c', 5));
    expect(upstreams[0]!.stopped).toBe(false);
    expect(shared.size).toBe(1);

    await c.stream.return(); // as a `break` out of for-await does
    await flush();
    expect(upstreams[0]!.stopped).toBe(true);
    expect(shared.size).toBe(0);
    expect(a.events.map((e) => e.type)).toEqual(['put', 'synced']);

    const d = join('next');
    expect(upstreams).toHaveLength(2);
    up().push(put('k1', 'a', 3, 6));
    up().push(synced(6));
    await flush();
    expect(d.events.map((e) => `${e.type}@${e.revision}`)).toEqual(['put@6', 'synced@6']);
  });
});
