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
 */
import type { ClientDuplexStream } from '@grpc/grpc-js';
import type { IWatchRequest, IWatchResponse, IEvent, IKeyValue } from 'etcd3';
import type { KeyValue, Watch, WatchEvent, WatchStatus } from '../../backend/types.js';
import { Channel } from '../../core/channel.js';
import { abortReason, backoff } from '../../core/async.js';
import { UnavailableError, type RosterError } from '../../core/errors.js';
import { quietCancel, toRosterError } from './client.js';

export type WatchStream = ClientDuplexStream<IWatchRequest, IWatchResponse>;

export interface WatchDeps {
  /** etcd key range of the prefix. */
  key: Buffer;
  rangeEnd: Buffer;
  /** A consistent snapshot of the prefix (linearizable range). */
  snapshot(): Promise<{ revision: number; items: KeyValue[] }>;
  openStream(): Promise<WatchStream>;
  toKv(kv: IKeyValue): KeyValue;
  /** Recoverable error on an auth-enabled cluster (expired token): refresh it before retrying. */
  onAuthExpired(): void;
  onEnd(w: EtcdWatch): void;
}

type Outcome = { kind: 'compacted' } | { kind: 'broken'; err: RosterError } | { kind: 'stopped' };

export class EtcdWatch {
  readonly ch: Channel<WatchEvent>;
  readonly watch: Watch;
  private lastRev = 0;
  private stopped = false;
  private attempt = 0;
  private stream: WatchStream | undefined;
  private wake: (() => void) | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly onAbort: () => void;

  constructor(
    private readonly deps: WatchDeps,
    fromRevision: number | undefined,
    private readonly signal: AbortSignal | undefined,
    private readonly onStatus?: (status: WatchStatus) => void,
  ) {
    this.ch = new Channel<WatchEvent>(() => this.stop());
    this.watch = Object.assign(this.ch, { close: () => void this.ch.return() });
    this.onAbort = () => this.ch.end(abortReason(signal!));
    signal?.addEventListener('abort', this.onAbort, { once: true });
    void this.run(fromRevision);
  }

  /** True between a broken stream and the next created one (onStatus is told both edges). */
  private down = false;

  private status(st: WatchStatus): void {
    if (!this.onStatus || this.stopped || this.down === !st.connected) return;
    this.down = !st.connected;
    try {
      this.onStatus(st);
    } catch (e) {
      this.ch.end(e); // the consumer's callback threw: surface it through the stream, never drop it
    }
  }

  /** End with an error (backend destroy) or normally. */
  end(err?: unknown): void {
    this.ch.end(err);
  }

  private stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    this.signal?.removeEventListener('abort', this.onAbort);
    if (this.timer) clearTimeout(this.timer);
    if (this.stream) quietCancel(this.stream);
    this.stream = undefined;
    this.wake?.();
    this.deps.onEnd(this);
  }

  private async run(fromRevision: number | undefined): Promise<void> {
    try {
      if (fromRevision === undefined) {
        if (!(await this.snapshot(false))) return;
      } else {
        this.lastRev = fromRevision;
      }
      while (!this.stopped) {
        const out = await this.follow();
        if (out.kind === 'stopped') return;
        if (out.kind === 'compacted') {
          if (!(await this.snapshot(true))) return;
          continue;
        }
        if (out.err.code !== 'UNAVAILABLE') throw out.err;
        if (/invalid auth token/.test(out.err.message)) this.deps.onAuthExpired();
        this.status({ connected: false, error: out.err });
        await this.pause();
      }
    } catch (e) {
      this.ch.end(toRosterError(e, 'etcd watch'));
    }
  }

  /** Deliver a snapshot (initial puts, or one reset) then synced; false if stopped meanwhile. */
  private async snapshot(reset: boolean): Promise<boolean> {
    for (;;) {
      if (this.stopped) return false;
      try {
        const { revision, items } = await this.deps.snapshot();
        if (this.stopped) return false;
        if (reset) this.ch.push({ type: 'reset', revision, items });
        else for (const kv of items) this.ch.push({ type: 'put', key: kv.key, kv, revision });
        this.ch.push({ type: 'synced', revision });
        this.lastRev = revision;
        this.attempt = 0;
        return true;
      } catch (e) {
        const err = toRosterError(e, 'etcd watch snapshot');
        if (err.code !== 'UNAVAILABLE') throw err;
        this.status({ connected: false, error: err });
        await this.pause();
      }
    }
  }

  private pause(): Promise<void> {
    return new Promise((resolve) => {
      if (this.stopped) return resolve();
      this.wake = resolve;
      this.timer = setTimeout(resolve, backoff(this.attempt++, 100, 2000));
      this.timer.unref();
    });
  }

  /** One watch stream from lastRev + 1 until it breaks, is compacted away, or the watch stops. */
  private async follow(): Promise<Outcome> {
    let stream: WatchStream;
    try {
      stream = await this.deps.openStream();
    } catch (e) {
      return { kind: 'broken', err: toRosterError(e, 'etcd watch') };
    }
    if (this.stopped) {
      quietCancel(stream);
      return { kind: 'stopped' };
    }
    this.stream = stream;
    return new Promise<Outcome>((resolve) => {
      let done = false;
      const finish = (o: Outcome) => {
        if (done) return;
        done = true;
        this.wake = undefined;
        stream.removeAllListeners('data');
        if (this.stream === stream) this.stream = undefined;
        quietCancel(stream);
        resolve(o);
      };
      this.wake = () => finish({ kind: 'stopped' });
      stream.on('data', (res: IWatchResponse) => {
        if (done || this.stopped) return;
        if (Number(res.compact_revision) > 0) return finish({ kind: 'compacted' });
        if (res.canceled) {
          const reason = res.cancel_reason || 'cancelled by etcd';
          if (/compacted/.test(reason)) return finish({ kind: 'compacted' });
          return finish({ kind: 'broken', err: toRosterError(new Error(reason), 'etcd watch') });
        }
        if (res.created) {
          this.attempt = 0;
          this.status({ connected: true });
          return;
        }
        if (res.events.length === 0) {
          // Progress notification: caught up to the header revision.
          const rev = Number(res.header.revision);
          if (rev > this.lastRev) this.lastRev = rev;
          return;
        }
        for (const ev of res.events) this.deliver(ev);
      });
      stream.on('error', (e: unknown) => {
        if (!this.stopped) finish({ kind: 'broken', err: toRosterError(e, 'etcd watch') });
        else finish({ kind: 'stopped' });
      });
      stream.on('end', () => finish(this.stopped ? { kind: 'stopped' } : { kind: 'broken', err: new UnavailableError('etcd watch stream ended') }));
      stream.write({
        create_request: {
          key: this.deps.key,
          range_end: this.deps.rangeEnd,
          start_revision: this.lastRev + 1,
          prev_kv: true,
          progress_notify: true,
        },
      });
    });
  }

  private deliver(ev: IEvent): void {
    // No de-duplication needed: the stream starts at lastRev + 1. Several events may share one
    // revision (a transaction, a lease expiry deleting many keys); they arrive in one response.
    const revision = Number(ev.kv.mod_revision);
    if (ev.type === 'Put') {
      const kv = this.deps.toKv(ev.kv);
      this.ch.push({ type: 'put', key: kv.key, kv, revision });
    } else {
      const key = this.deps.toKv(ev.kv).key;
      const prev = ev.prev_kv && ev.prev_kv.key && ev.prev_kv.key.length > 0 ? this.deps.toKv(ev.prev_kv) : undefined;
      this.ch.push(prev ? { type: 'delete', key, revision, prev } : { type: 'delete', key, revision });
    }
    this.lastRev = revision;
  }
}
