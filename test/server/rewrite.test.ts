/**
 * rewriteKey (src/server/rewrite.ts), the one read-modify-write behind PATCH /api/v1/instances and
 * the Consul agent's maintenance and check updates, over a real engine: the write keeps the key's
 * session, a write that lost a race is read again, a key that keeps changing ends in the caller's
 * error after 5 rounds, an unchanged value is not written, and other errors pass through.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Engine } from '../../src/engine/engine.js';
import { isRosterError, NotFoundError, RosterError } from '../../src/core/errors.js';
import type { KeyValue } from '../../src/core/kv.js';
import { rewriteKey, type Rewrite } from '../../src/server/rewrite.js';

/**
 * rewriteKey's `next` over key `k`: each round reads it and, when `race(round)` names a value,
 * another writer puts that value (under the key's session) between the read and the write.
 */
function racedReads(engine: Engine, race: (round: number) => string | undefined, value: (kv: KeyValue) => string): { next: () => Promise<Rewrite>; rounds: () => number } {
  let rounds = 0;
  return {
    rounds: () => rounds,
    next: async () => {
      const kv = (await engine.get('k'))!;
      const other = race(++rounds);
      if (other !== undefined) await engine.put('k', other, kv.session !== undefined ? { lease: kv.session } : {});
      return { kv, value: value(kv) };
    },
  };
}

describe('rewriteKey', () => {
  let engine: Engine;
  beforeEach(async () => {
    engine = await Engine.open();
  });
  afterEach(async () => {
    await engine.close();
  });

  it('keeps the session, and reads again when another write landed between its read and its write', async () => {
    const { id: lease } = await engine.grant(60_000);
    await engine.put('k', 'a', { lease });
    // The first round loses the race: someone else writes after its read.
    const race = racedReads(engine, (round) => (round === 1 ? 'b' : undefined), (kv) => `${kv.value}+x`);
    const r = await rewriteKey(engine, race.next, () => new Error('gave up'));
    expect(race.rounds()).toBe(2);
    const kv = (await engine.get('k'))!;
    expect(kv.value).toBe('b+x'); // the second round's read, not the lost first one
    expect(kv.session).toBe(lease);
    expect(r).toEqual({ changed: true, revision: kv.modRevision });
  });

  it('writes a key with no session without one', async () => {
    await engine.put('k', 'a');
    await rewriteKey(engine, async () => ({ kv: (await engine.get('k'))!, value: 'b' }), () => new Error('gave up'));
    const kv = (await engine.get('k'))!;
    expect(kv.value).toBe('b');
    expect(kv.session).toBeUndefined();
  });

  it("gives up with the caller's error after 5 rounds when the key keeps changing", async () => {
    await engine.put('k', '0');
    const race = racedReads(engine, (round) => String(round), () => 'mine');
    const err = await rewriteKey(engine, race.next, () => new RosterError('CONFLICT', 'kept changing')).catch((e: unknown) => e);
    expect(isRosterError(err, 'CONFLICT')).toBe(true);
    expect((err as Error).message).toBe('kept changing');
    expect(race.rounds()).toBe(5);
    expect((await engine.get('k'))!.value).toBe('5');
  });

  it('writes nothing when the value is to stay as it is', async () => {
    const put = await engine.put('k', 'a');
    const r = await rewriteKey(engine, async () => ({ kv: (await engine.get('k'))!, value: undefined }), () => new Error('gave up'));
    expect(r).toEqual({ changed: false, revision: put.revision });
    expect(engine.revision).toBe(put.revision);
  });

  it("throws what the read throws, and a write error other than a conflict, without another round", async () => {
    let rounds = 0;
    const refused = await rewriteKey(
      engine,
      async () => {
        rounds++;
        throw new NotFoundError('no such instance');
      },
      () => new Error('gave up'),
    ).catch((e: unknown) => e);
    expect(isRosterError(refused, 'NOT_FOUND')).toBe(true);
    expect(rounds).toBe(1);

    await engine.put('k', 'a');
    const kv = (await engine.get('k'))!;
    rounds = 0;
    const lost = await rewriteKey(
      engine,
      async () => {
        rounds++;
        // A record naming a session the engine no longer has: the put fails with SESSION_LOST.
        return { kv: { ...kv, session: 'ended-session' }, value: 'b' };
      },
      () => new Error('gave up'),
    ).catch((e: unknown) => e);
    expect(isRosterError(lost, 'SESSION_LOST')).toBe(true);
    expect((await engine.get('k'))!.value).toBe('a');
    expect(rounds).toBe(1);
  });
});
