/**
 * A TCP proxy on a free loopback port in front of one server, that a test turns into the network
 * faults clients meet in production:
 *
 *   const p = await TcpProxy.start('127.0.0.1:2379');
 *   p.cut();          // every connection reset, new ones refused (reset at accept): a crashed host
 *   p.blackhole();    // connections stay open and new ones are accepted, nothing is forwarded
 *                     // either way: a partition or a host that hangs (timeouts are the only signal)
 *   p.pause();        // like blackhole, but bytes are held, not dropped, and delivered on heal():
 *                     // a stalled network that recovers
 *   p.delay(200);     // forward, every chunk 200 ms late (both directions, order kept)
 *   p.heal();         // forward again, no delay; connections that lived through a blackhole are
 *                     // reset (their byte streams lost data), held bytes flow on
 *   await p.close();
 *
 * No dependency on a test framework: it is part of `roster-sd/testing`.
 */
import net from 'node:net';

export type ProxyMode = 'forward' | 'cut' | 'blackhole' | 'paused';

/** One direction of one connection: chunks read from `src`, written to `dst` (maybe later). */
class Lane {
  private queue: { due: number; chunk: Buffer }[] = [];
  private timer: NodeJS.Timeout | undefined;
  dropped = 0;

  constructor(
    private readonly proxy: TcpProxy,
    private readonly src: net.Socket,
    private readonly dst: () => net.Socket | undefined,
  ) {
    src.on('data', (chunk: Buffer) => this.push(chunk));
  }

  private push(chunk: Buffer): void {
    const mode = this.proxy.mode;
    if (mode === 'blackhole' || mode === 'cut') {
      this.dropped += chunk.length;
      return;
    }
    const delay = this.proxy.delayMs;
    if (mode === 'forward' && delay === 0 && this.queue.length === 0) return this.write(chunk);
    this.queue.push({ due: Date.now() + delay, chunk });
    this.flush();
  }

  private write(chunk: Buffer): void {
    const dst = this.dst();
    if (!dst || dst.destroyed) return;
    if (!dst.write(chunk)) {
      // Backpressure: stop reading until the other side drains (unless paused on purpose).
      this.src.pause();
      dst.once('drain', () => {
        if (this.proxy.mode !== 'paused') this.src.resume();
      });
    }
  }

  /** Write every chunk that is due, in order; re-arm for the next one. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.proxy.mode !== 'forward') return;
    const now = Date.now();
    while (this.queue.length > 0 && this.queue[0]!.due <= now) this.write(this.queue.shift()!.chunk);
    if (this.queue.length > 0) this.timer = setTimeout(() => this.flush(), this.queue[0]!.due - now);
  }

  drop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.queue = [];
  }
}

interface Pair {
  a: net.Socket;
  b: net.Socket | undefined;
  lanes: Lane[];
  /** Accepted or lived while blackholed: its streams may have lost bytes. */
  tainted: boolean;
}

export interface TcpProxyOptions {
  /** Address to listen on (default 127.0.0.1; '::1' for IPv6 tests). */
  listenHost?: string;
  /** Port to listen on (default: a free one). */
  port?: number;
}

export class TcpProxy {
  private _mode: ProxyMode = 'forward';
  private _delay = 0;
  private readonly pairs = new Set<Pair>();
  private _port = 0;
  private closed = false;
  /** Connections accepted since start (including refused ones). */
  accepted = 0;
  /** Connections reset at accept because the proxy was cut. */
  refused = 0;

  private constructor(
    private readonly server: net.Server,
    readonly targetHost: string,
    readonly targetPort: number,
    readonly listenHost: string,
  ) {}

  /** Start a proxy to `target` ("host:port", "[v6]:port" or a port on 127.0.0.1). */
  static async start(target: string | number, opts: TcpProxyOptions = {}): Promise<TcpProxy> {
    const { host, port } = splitTarget(target);
    const listenHost = opts.listenHost ?? '127.0.0.1';
    const server = net.createServer();
    const proxy = new TcpProxy(server, host, port, listenHost);
    server.on('connection', (a: net.Socket) => proxy.accept(a));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port ?? 0, listenHost, () => {
        server.off('error', reject);
        resolve();
      });
    });
    server.on('error', () => undefined);
    proxy._port = (server.address() as net.AddressInfo).port;
    return proxy;
  }

  get port(): number {
    return this._port;
  }
  /** `host:port` clients connect to (IPv6 bracketed). */
  get endpoint(): string {
    return `${this.listenHost.includes(':') ? `[${this.listenHost}]` : this.listenHost}:${this._port}`;
  }
  get mode(): ProxyMode {
    return this._mode;
  }
  get delayMs(): number {
    return this._delay;
  }
  /** Open client connections. */
  get connections(): number {
    return this.pairs.size;
  }

  private accept(a: net.Socket): void {
    this.accepted++;
    a.on('error', () => undefined);
    a.setNoDelay(true); // a proxy must not add Nagle's 40 ms to small request/response exchanges
    if (this.closed || this._mode === 'cut') {
      this.refused++;
      a.resetAndDestroy();
      return;
    }
    const pair: Pair = { a, b: undefined, lanes: [], tainted: this._mode === 'blackhole' };
    this.pairs.add(pair);
    const drop = () => this.destroy(pair);
    a.on('close', drop);
    if (this._mode === 'paused') a.pause();
    pair.lanes.push(new Lane(this, a, () => pair.b));
    this.connectUpstream(pair);
  }

  private connectUpstream(pair: Pair): void {
    const b = net.connect({ host: this.targetHost, port: this.targetPort });
    b.setNoDelay(true);
    pair.b = b;
    b.on('error', () => undefined);
    b.on('close', () => {
      // Behind a partition the client would not see the server's side close: stay silent.
      if (this._mode === 'blackhole' && pair.tainted) pair.b = undefined;
      else this.destroy(pair);
    });
    if (this._mode === 'paused') b.pause();
    pair.lanes.push(new Lane(this, b, () => pair.a));
  }

  private destroy(pair: Pair, reset = false): void {
    if (!this.pairs.delete(pair)) return;
    for (const l of pair.lanes) l.drop();
    if (reset) {
      if (!pair.a.destroyed) pair.a.resetAndDestroy();
      if (pair.b && !pair.b.destroyed) pair.b.resetAndDestroy();
    } else {
      pair.a.destroy();
      pair.b?.destroy();
    }
  }

  /** Reset every connection and refuse new ones until heal(): what a crashed host looks like. */
  cut(): void {
    this._mode = 'cut';
    for (const p of [...this.pairs]) this.destroy(p, true);
  }

  /**
   * Keep every connection open, accept new ones, forward nothing in either direction until heal()
   * (bytes are dropped): a partition, or a host that hangs. Only timeouts notice it.
   */
  blackhole(): void {
    this._mode = 'blackhole';
    for (const p of this.pairs) {
      p.tainted = true;
      for (const l of p.lanes) l.drop();
    }
  }

  /** Hold every byte (stop reading both sides) until heal(), then deliver it: a stall, no loss. */
  pause(): void {
    this._mode = 'paused';
    for (const p of this.pairs) {
      p.a.pause();
      p.b?.pause();
    }
  }

  /** Forward again with each chunk `ms` late (0 = no delay). Also heals a cut / blackhole / pause. */
  delay(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new RangeError(`delay must be >= 0 ms, got ${ms}`);
    this.heal();
    this._delay = ms;
  }

  /** Forward again without delay. Connections that lived through a blackhole are reset. */
  heal(): void {
    const was = this._mode;
    this._mode = 'forward';
    this._delay = 0;
    for (const p of [...this.pairs]) {
      if (p.tainted) {
        this.destroy(p, true);
        continue;
      }
      if (was === 'paused') {
        p.a.resume();
        p.b?.resume();
      }
      for (const l of p.lanes) l.flush();
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    for (const p of [...this.pairs]) this.destroy(p, true);
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

function splitTarget(target: string | number): { host: string; port: number } {
  if (typeof target === 'number') return { host: '127.0.0.1', port: target };
  const v6 = /^\[([^\]]+)\]:(\d+)$/.exec(target);
  if (v6) return { host: v6[1]!, port: Number(v6[2]) };
  const i = target.lastIndexOf(':');
  if (i <= 0) throw new RangeError(`proxy target ${JSON.stringify(target)}: expected host:port`);
  return { host: target.slice(0, i), port: Number(target.slice(i + 1)) };
}
