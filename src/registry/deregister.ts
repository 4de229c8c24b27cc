import type { Backend, KeyValue } from '../contract/types.js';
import { ConflictError, isRosterError, NotFoundError } from '../core/errors.js';
import { validateInstanceId, validateServiceName } from '../core/names.js';
import type { Instance } from '../core/model.js';
import { rosterLayout, type Layout } from './layout.js';

/**
 * Deregistering an instance someone else registered (`roster deregister`, an operator's action),
 * so that the owning Registrar does not put it back.
 *
 * A Registrar re-puts its keys when they are deleted behind its back: its contract is "registered
 * while the process lives", and a stray delete must not unregister a live service. An operator who
 * deregisters on purpose therefore leaves an **intent** first:
 *
 *   roster/deregistered/<service>/<id>  →  {"session": "<the key's session>", "at": ms, "by": "..."}
 *
 * then deletes the instance's key (a watcher that sees a delete without the leaving mark of
 * Layout.markLeaving reads the intent to tell this deregistration from an expiry). A Registrar that sees one of its keys deleted (or
 * missing after an outage, or about to be re-put after a lost session) reads the intent, and when
 * it names one of the Registrar's own sessions (or no session, on a backend that does not report
 * them) it **drops the instance** instead of repairing it (`deregistered` event with reason
 * `operator`). The intent names the session it was aimed at, so a process that registers the same
 * id later (a restart) is not affected, and the intent itself is bound to a session of its own that
 * is left to expire after `hold` (default 5 min): nothing to clean up.
 */
export const INTENT_PREFIX = 'roster/deregistered/';

export function intentKey(service: string, id: string): string {
  return `${INTENT_PREFIX}${service}/${id}`;
}

export interface DeregisterIntent {
  /** The session the deregistered key was bound to (undefined: not reported by the backend). */
  readonly session?: string;
  readonly at: number;
  readonly by?: string;
}

export function parseIntent(kv: KeyValue | undefined): DeregisterIntent | undefined {
  if (!kv) return undefined;
  try {
    const o = JSON.parse(kv.value) as Record<string, unknown>;
    return {
      ...(typeof o.session === 'string' ? { session: o.session } : {}),
      at: typeof o.at === 'number' ? o.at : 0,
      ...(typeof o.by === 'string' ? { by: o.by } : {}),
    };
  } catch {
    return { at: 0 }; // an intent we cannot read still says "deregistered on purpose"
  }
}

export interface DeregisterOptions {
  layout?: Layout;
  /** How long the intent stays (default 5 min; a session TTL, so at most 24 h). */
  hold?: number;
  /** Who asked, recorded in the intent (e.g. user@host). */
  by?: string;
  signal?: AbortSignal;
}

export interface DeregisterResult {
  readonly key: string;
  readonly instance: Instance;
  /** The session the key was bound to, if the backend reports it. */
  readonly session?: string;
}

/**
 * Deregister `<service>/<id>` on purpose: write the intent, mark the value, delete the key.
 * NotFoundError when no instance of the service has that id.
 */
export async function deregisterInstance(backend: Backend, service: string, id: string, opts: DeregisterOptions = {}): Promise<DeregisterResult> {
  validateServiceName(service);
  validateInstanceId(id);
  const layout = opts.layout ?? rosterLayout();
  const sig = opts.signal ? { signal: opts.signal } : {};
  for (let attempt = 0; attempt < 5; attempt++) {
    const found = await find(backend, layout, service, id, opts.signal);
    if (!found) throw new NotFoundError(`no instance ${JSON.stringify(id)} of service ${JSON.stringify(service)} under ${JSON.stringify(layout.servicePrefix(service))}`, { details: { service, id } });
    const { kv, instance } = found;
    if (kv.session !== undefined) {
      // The intent lives on a session of its own that nobody keeps alive: it expires after `hold`.
      const s = await backend.session({ ttl: opts.hold ?? 300_000, ...sig });
      try {
        await backend.put(intentKey(service, id), JSON.stringify({ session: kv.session, at: Date.now(), ...(opts.by ? { by: opts.by } : {}) }), { session: s, ...sig });
      } finally {
        s.orphan();
      }
    }
    try {
      // Not marked leaving: a put from here (not the owner's session) would detach the key from
      // its lease if the delete then failed. Watchers read the intent instead.
      await backend.delete(kv.key, { ifVersion: kv.version, ...sig });
      return { key: kv.key, instance, ...(kv.session !== undefined ? { session: kv.session } : {}) };
    } catch (e) {
      if (!isRosterError(e, 'CONFLICT')) throw e; // changed meanwhile (a health update): look again
    }
  }
  throw new ConflictError(`could not deregister ${service}/${id}: its key keeps changing`);
}

async function find(backend: Backend, layout: Layout, service: string, id: string, signal?: AbortSignal): Promise<{ kv: KeyValue; instance: Instance } | undefined> {
  const { items } = await backend.list(layout.servicePrefix(service), signal ? { signal } : {});
  for (const kv of items) {
    let inst: Instance | undefined;
    try {
      inst = layout.decode(service, kv);
    } catch {
      continue;
    }
    if (inst && inst.id === id) return { kv, instance: inst };
  }
  return undefined;
}
