/**
 * A fault-injecting proxy over a real backend (toxiproxy-style, not a mock): every call goes to the
 * real backend until fail() is called; from then on calls reject with UnavailableError and open
 * watch streams end with it (as a remote backend's do when the server goes away) until heal().
 * Sessions are the real backend's: their keepalive is not affected (lose them explicitly).
 *
 * Two finer faults, each one shot: `loseReply(op)` lets the next put/delete reach the real backend
 * and then answers UnavailableError (a connection lost after the request was sent: it may or may
 * not have been applied); `hideNext(key)` makes watches skip the next put and delete of a key, as a
 * backend that reads state at intervals may (ZooKeeper: created and deleted between two reads), and
 * tells a watch that asked for progress markers (WatchOptions.progress) a `synced` at the delete's
 * revision instead — what such a backend reports.
 */
import type { Backend, DeleteOptions, KeyValue, PutOptions, Session, SessionOptions, Watch, WatchOptions } from '../../src/contract/types.js';
import { WatchStream } from '../../src/contract/stream.js';
import { UnavailableError } from '../../src/core/errors.js';

export class FaultyBackend implements Backend {
  readonly kind: string;
  readonly url: string;
  private failure: Error | undefined;
  private readonly streams = new Set<{ ch: WatchStream; inner: Watch }>();
  /** Calls refused while failing (to assert that clients kept trying). */
  refused = 0;
  private lose = new Set<'put' | 'delete'>();
  private hidden = new Map<string, number>();

  constructor(readonly inner: Backend) {
    this.kind = inner.kind;
    this.url = inner.url;
  }

  get failing(): boolean {
    return this.failure !== undefined;
  }

  fail(err: Error = new UnavailableError(`${this.url} unreachable (injected fault)`)): void {
    this.failure = err;
    for (const s of [...this.streams]) {
      s.ch.end(err);
      s.inner.close();
    }
    this.streams.clear();
  }

  heal(): void {
    this.failure = undefined;
  }

  loseReply(op: 'put' | 'delete'): void {
    this.lose.add(op);
  }

  hideNext(key: string): void {
    this.hidden.set(key, 2); // its next put and its next delete
  }

  private lost(op: 'put' | 'delete'): void {
    if (this.lose.delete(op)) throw new UnavailableError(`${this.url}: connection lost after the ${op} was sent (injected fault); it may or may not have been applied`);
  }

  private gate(): void {
    if (this.failure) {
      this.refused++;
      throw this.failure;
    }
  }

  async session(opts: SessionOptions): Promise<Session> {
    this.gate();
    return this.inner.session(opts);
  }
  async get(key: string, opts?: { signal?: AbortSignal }): Promise<KeyValue | undefined> {
    this.gate();
    return this.inner.get(key, opts);
  }
  async put(key: string, value: string, opts?: PutOptions) {
    this.gate();
    const r = await this.inner.put(key, value, opts);
    this.lost('put');
    return r;
  }
  async delete(key: string, opts?: DeleteOptions) {
    this.gate();
    const r = await this.inner.delete(key, opts);
    this.lost('delete');
    return r;
  }
  async list(prefix: string, opts?: { signal?: AbortSignal }) {
    this.gate();
    return this.inner.list(prefix, opts);
  }

  watch(prefix: string, opts: WatchOptions = {}): Watch {
    if (this.failure) {
      // Like a remote backend: the stream is created, then fails when read.
      this.refused++;
      const ch = new WatchStream();
      ch.end(this.failure);
      return ch;
    }
    const inner = this.inner.watch(prefix, opts);
    const ch = new WatchStream();
    const entry = { ch, inner };
    ch.onStop(() => {
      this.streams.delete(entry);
      inner.close();
    });
    inner.on('status', (st) => ch.status(st));
    this.streams.add(entry);
    void (async () => {
      try {
        for await (const ev of inner) {
          const left = ev.type === 'put' || ev.type === 'delete' ? this.hidden.get(ev.key) : undefined;
          if (left !== undefined && (ev.type === 'put' || ev.type === 'delete')) {
            if (left <= 1) this.hidden.delete(ev.key);
            else this.hidden.set(ev.key, left - 1);
            // Once the delete is past, the state at its revision is what the view holds again.
            if (ev.type === 'delete' && opts.progress && !ch.push({ type: 'synced', revision: ev.revision })) break;
            continue;
          }
          if (!ch.push(ev)) break;
        }
        ch.end();
      } catch (e) {
        ch.end(e);
      }
    })();
    return ch;
  }

  sessionKey(session: Session): string {
    return this.inner.sessionKey(session);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
  destroy(err?: Error): void {
    this.inner.destroy(err);
  }
}
