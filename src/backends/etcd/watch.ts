/**
 * A gap-free watch over an etcd prefix, with explicit resumption (etcd3's own Watcher resumes
 * silently and cannot tell its user that history was compacted).
 *
 * Invariant: every change with revision <= `lastRev` has been delivered (or is reflected in the
 * snapshot that was delivered at `lastRev`), and nothing after it. So after any failure the stream
 * is re-created at `lastRev + 1`; etcd replays the history it still has. `lastRev` advances only to
 * the revision of the last event delivered (etcd never splits one revision across responses) or to
 * the header revision of a progress notification (sent only to watchers that are caught up).
 *
 * When the revision to resume from has been compacted (the watch is cancelled with
 * `compact_revision`, or the range fails with "required revision has been compacted"), the stream
 * emits one `reset` with a fresh snapshot at revision R, then `synced` R, then resumes at R + 1.
 * Unavailability is retried forever with jittered backoff until the watch is closed; anything else
 * (permission denied, bad request) ends the stream with the error.
 *
 * Silence. A watch stream that is quiet may be idle or may sit on a member that stopped answering
 * (a partition, a paused process) — or one that answers status probes but has stalled this stream.
 * So after `idleMs` without any message the stream asks for progress (`progress_request`: etcd
 * answers at once); with no message at all within `timeoutMs` more, the stream is abandoned as
 * stalled (its member deprioritised: `stalled`) and re-opened on another member from lastRev + 1.
 * Bound: a stalled stream is left at most idleMs + timeoutMs + the check period (idleMs / 4, at most
 * 250 ms) after its last message. The answer to a progress request (watch_id -1) proves only that
 * the stream is alive: etcd 3.4 may send it ahead of events still being caught up, so it never
 * moves lastRev; only the watcher's own progress notifications do.
 *
 * With WatchOptions.progress, each such progress notification is also handed to the consumer as a
 * `synced` at its revision.
 */
import type { ClientDuplexStream } from '@grpc/grpc-js';
import type { IWatchRequest, IWatchResponse, IEvent, IKeyValue } from 'etcd3';
import type { KeyValue } from '../../core/kv.js';
import { resume, Terminal, type WatchStream } from '../../contract/stream.js';
import { UnavailableError, type RosterError } from '../../core/errors.js';
import { quietCancel, toRosterError } from './client.js';

export type EtcdStream = ClientDuplexStream<IWatchRequest, IWatchResponse>;

export interface WatchDeps {
  /** etcd key range of the prefix. */
  key: Buffer;
  rangeEnd: Buffer;
  /** A consistent snapshot of the prefix (linearizable range). */
  snapshot(): Promise<{ revision: number; items: KeyValue[] }>;
  openStream(): Promise<EtcdStream>;
  toKv(kv: IKeyValue): KeyValue;
  /** Recoverable error on an auth-enabled cluster (expired token): refresh it before retrying. */
  onAuthExpired(): void;
  /** The stream stopped answering (see the header): deprioritise the member it is on. */
  stalled(s: EtcdStream): void;
  /** Ask for progress after this long without a message (ms). */
  idleMs: number;
  /** Abandon the stream when nothing came within this long after asking (ms). */
  timeoutMs: number;
}

/** watch_id of etcd's answer to a progress request (clientv3.InvalidWatchID): not a watcher's. */
const PROGRESS_REPLY_ID = '-1';

/** Watch responses the contract needs told apart. */
type Outcome = { kind: 'compacted' } | { kind: 'broken'; err: RosterError } | { kind: 'stopped' };

/** Feed `stream` from etcd (see the header); the reconnect loop is the contract's `resume`. */
export function etcdWatch(stream: WatchStream, fromRevision: number | undefined, deps: WatchDeps): void {
  /** Revision the consumer's view is complete at; every (re)connect starts at lastRev + 1. */
  let lastRev = fromRevision ?? 0;
  /** What must be delivered before following: the initial snapshot, or a reset after compaction. */
  let pending: 'snapshot' | 'reset' | undefined = fromRevision === undefined ? 'snapshot' : undefined;
  let current: EtcdStream | undefined;
  let wake: (() => void) | undefined;
  stream.onStop(() => {
    if (current) quietCancel(current);
    current = undefined;
    wake?.();
  });

  /** A failure: UNAVAILABLE is an outage (retried), anything else ends the watch. */
  const fail = (err: RosterError): never => {
    if (err.code !== 'UNAVAILABLE') throw new Terminal(err);
    if (/invalid auth token/.test(err.message)) deps.onAuthExpired();
    throw err;
  };

  const deliverSnapshot = async (reset: boolean): Promise<void> => {
    let snap: { revision: number; items: KeyValue[] };
    try {
      snap = await deps.snapshot();
    } catch (e) {
      return fail(toRosterError(e, 'etcd watch snapshot'));
    }
    if (stream.ended) return;
    const { revision, items } = snap;
    if (reset) stream.push({ type: 'reset', revision, items });
    else for (const kv of items) stream.push({ type: 'put', key: kv.key, kv, revision });
    stream.push({ type: 'synced', revision });
    lastRev = revision;
    pending = undefined;
  };

  const deliver = (ev: IEvent): void => {
    // No de-duplication needed: the stream starts at lastRev + 1. Several events may share one
    // revision (a transaction, a lease expiry deleting many keys); they arrive in one response.
    const revision = Number(ev.kv.mod_revision);
    if (ev.type === 'Put') {
      const kv = deps.toKv(ev.kv);
      stream.push({ type: 'put', key: kv.key, kv, revision });
    } else {
      const key = deps.toKv(ev.kv).key;
      const prev = ev.prev_kv && ev.prev_kv.key && ev.prev_kv.key.length > 0 ? deps.toKv(ev.prev_kv) : undefined;
      stream.push(prev ? { type: 'delete', key, revision, prev } : { type: 'delete', key, revision });
    }
    lastRev = revision;
  };

  /** One watch stream from lastRev + 1 until it breaks, is compacted away, or the watch stops. */
  const follow = async (up: () => void): Promise<Outcome> => {
    let s: EtcdStream;
    try {
      s = await deps.openStream();
    } catch (e) {
      return { kind: 'broken', err: toRosterError(e, 'etcd watch') };
    }
    if (stream.ended) {
      quietCancel(s);
      return { kind: 'stopped' };
    }
    current = s;
    return new Promise<Outcome>((resolve) => {
      let done = false;
      /** Last message of any kind on this stream, and when progress was last asked for. */
      let heard = Date.now();
      let asked = 0;
      const check = setInterval(() => {
        const now = Date.now();
        const silent = now - heard;
        if (asked > heard && now - asked >= deps.timeoutMs) {
          deps.stalled(s);
          return finish({ kind: 'broken', err: new UnavailableError(`etcd watch: no answer on the stream within ${deps.timeoutMs} ms of a progress request (${silent} ms silent); reopening it on another member`) });
        }
        if (silent >= deps.idleMs && asked <= heard) {
          asked = now;
          s.write({ progress_request: {} });
        }
      }, Math.max(10, Math.min(250, deps.idleMs / 4)));
      check.unref();
      const finish = (o: Outcome) => {
        if (done) return;
        done = true;
        clearInterval(check);
        wake = undefined;
        s.removeAllListeners('data');
        if (current === s) current = undefined;
        quietCancel(s);
        resolve(o);
      };
      wake = () => finish({ kind: 'stopped' });
      s.on('data', (res: IWatchResponse) => {
        heard = Date.now();
        if (done || stream.ended) return;
        if (Number(res.compact_revision) > 0) return finish({ kind: 'compacted' });
        if (res.canceled) {
          const reason = res.cancel_reason || 'cancelled by etcd';
          if (/compacted/.test(reason)) return finish({ kind: 'compacted' });
          return finish({ kind: 'broken', err: toRosterError(new Error(reason), 'etcd watch') });
        }
        if (res.created) return up();
        if (res.events.length === 0) {
          if (String(res.watch_id) === PROGRESS_REPLY_ID) return; // alive; says nothing about lastRev
          // The watcher's progress notification (sent only once it is caught up): up to the header revision.
          const rev = Number(res.header.revision);
          if (rev > lastRev) {
            lastRev = rev;
            if (stream.progress) stream.push({ type: 'synced', revision: rev });
          }
          return;
        }
        for (const ev of res.events) deliver(ev);
      });
      s.on('error', (e: unknown) => finish(stream.ended ? { kind: 'stopped' } : { kind: 'broken', err: toRosterError(e, 'etcd watch') }));
      s.on('end', () => finish(stream.ended ? { kind: 'stopped' } : { kind: 'broken', err: new UnavailableError('etcd watch stream ended') }));
      s.write({
        create_request: {
          key: deps.key,
          range_end: deps.rangeEnd,
          start_revision: lastRev + 1,
          prev_kv: true,
          progress_notify: true,
        },
      });
    });
  };

  const connect = async (up: () => void): Promise<void> => {
    if (pending) await deliverSnapshot(pending === 'reset');
    if (stream.ended) return;
    const out = await follow(up);
    if (out.kind === 'compacted') pending = 'reset'; // re-snapshot at once, no outage
    else if (out.kind === 'broken') fail(out.err);
  };

  void resume(stream, connect, { baseMs: 100, capMs: 2000 });
}
