/**
 * A fault-injecting proxy over a real backend (toxiproxy-style, not a mock): every call goes to the
 * real backend until fail() is called; from then on calls reject with UnavailableError and open
 * watch streams end with it (as a remote backend's do when the server goes away) until heal().
 * Sessions are the real backend's: their keepalive is not affected (lose them explicitly).
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
    return this.inner.put(key, value, opts);
  }
  async delete(key: string, opts?: DeleteOptions) {
    this.gate();
    return this.inner.delete(key, opts);
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
        for await (const ev of inner) if (!ch.push(ev)) break;
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
