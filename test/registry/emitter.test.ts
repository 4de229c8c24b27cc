import { describe, expect, it } from 'vitest';
import { Emitter } from '../../src/core/emitter.js';
import { Reader } from '../helpers/watch.js';

interface Events {
  tick: { n: number };
  error: { error: unknown; op: string };
}

class Ticker extends Emitter<Events> {
  tick(n: number) {
    this.emit('tick', { n });
  }
  all(signal?: AbortSignal) {
    return this.iterate({ signal });
  }
  end() {
    this.endIterators();
  }
}

describe('Emitter', () => {
  it('delivers to listeners in order; off/once work; a throwing listener becomes an error event', () => {
    const t = new Ticker();
    const got: string[] = [];
    const off = t.on('tick', (e) => got.push(`a${e.n}`));
    t.once('tick', (e) => got.push(`once${e.n}`));
    t.on('tick', () => {
      throw new Error('listener bug');
    });
    const errors: unknown[] = [];
    t.on('error', (e) => errors.push(e.error));
    t.tick(1);
    off();
    t.tick(2);
    expect(got).toEqual(['a1', 'once1']);
    expect(errors.map((e) => (e as Error).message)).toEqual(['listener bug', 'listener bug']);
    expect(t.listenerCount('tick')).toBe(1);
  });

  it('iterate(): tagged events in order, ends on endIterators() or with the abort reason', async () => {
    const t = new Ticker();
    const r = new Reader(t.all());
    t.tick(1);
    t.tick(2);
    expect(await r.take(2)).toEqual([
      { type: 'tick', n: 1 },
      { type: 'tick', n: 2 },
    ]);
    t.end();
    expect(await r.ended(1000)).toBe(true);
    const ac = new AbortController();
    const r2 = new Reader(t.all(ac.signal));
    const reason = new Error('stop');
    ac.abort(reason);
    await expect(r2.next(1000)).rejects.toBe(reason);
  });
});
