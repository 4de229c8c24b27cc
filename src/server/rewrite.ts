import { isRosterError } from '../core/errors.js';
import type { KeyValue } from '../core/kv.js';
import type { Engine } from '../engine/engine.js';

/** How many times a rewrite reads again after its write lost a race, before it gives up. */
const ATTEMPTS = 5;

/** One round of a rewrite: the record read, and what it should hold (`undefined`: leave it as it is). */
export interface Rewrite {
  readonly kv: KeyValue;
  readonly value: string | undefined;
}

/**
 * Rewrite a stored value in place, keeping its session: the one read-modify-write of a value the
 * server does not own (an operator's status change, the Consul agent's maintenance and check
 * updates). `next()` reads the key and returns what it should hold; it throws to refuse (not found,
 * not an instance, not allowed), and is called again on every round. The write is a compare-and-set
 * on the version read, under the key's own session, so a Registrar's key stays its own and its owner
 * sees a put of its own session and does not fight it (as with the health checker's writes). When
 * the key changed underneath (a Registrar update, a checker write) the round runs again from the
 * read, at most ATTEMPTS times; then `giveUp()` is thrown. Any other write error is thrown as is.
 *
 * Returns the revision of the write, or the modRevision of the record read when it was left as it was.
 */
export async function rewriteKey(engine: Engine, next: () => Promise<Rewrite>, giveUp: () => Error): Promise<{ changed: boolean; revision: number }> {
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const { kv, value } = await next();
    if (value === undefined) return { changed: false, revision: kv.modRevision };
    try {
      const r = await engine.put(kv.key, value, { ifVersion: kv.version, ...(kv.session !== undefined ? { lease: kv.session } : {}) });
      return { changed: true, revision: r.revision };
    } catch (e) {
      if (!isRosterError(e, 'CONFLICT')) throw e;
    }
  }
  throw giveUp();
}
