/**
 * A ZooKeeper-aware TCP proxy that loses one request's reply: the client's request is forwarded
 * (or not) and then the connection is cut before any answer reaches the client, so the client
 * cannot know whether the request was applied. That is the case Curator's protected mode (and
 * roster's createSequential) must resolve. Later connections (the client reconnecting its
 * session) pass through untouched.
 *
 *   const proxy = await RequestCutProxy.start(zk.port);
 *   proxy.arm((req) => req.type === 1 && req.body.includes('_c_'), 'after-forwarding');
 *   ... ZooKeeperBackend.open(proxy.url()) ...
 *   await proxy.fired;  // the matching request was seen and its connection cut
 *
 * Framing (ZooKeeper's client protocol): every packet is a 4-byte big-endian length and a body;
 * the first packet of a connection is the ConnectRequest, every later client packet starts with
 * the RequestHeader (int xid, int type: 1 = create).
 */
import { connect, createServer, type Server, type Socket } from 'node:net';

export interface SeenRequest {
  readonly xid: number;
  readonly type: number;
  /** The request body after the header, as latin1 text (paths are ASCII). */
  readonly body: string;
}

/** 'after-forwarding': the server gets the request (and applies it); the reply is lost.
 *  'before-forwarding': the server never gets it; to the client the outcome is just as unknown. */
export type CutMode = 'after-forwarding' | 'before-forwarding';

export class RequestCutProxy {
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private trigger: { match: (r: SeenRequest) => boolean; mode: CutMode; resolve: (r: SeenRequest) => void } | undefined;
  port = 0;
  /** Requests whose connection was cut. */
  readonly cut: SeenRequest[] = [];

  private constructor(
    private readonly targetPort: number,
    /** How long the connection stays open (replies withheld) after a forwarded request, so the
     *  server has applied it before it sees the client go. */
    private readonly settleMs: number,
  ) {
    this.server = createServer((client) => this.accept(client));
  }

  static async start(targetPort: number, settleMs = 300): Promise<RequestCutProxy> {
    const p = new RequestCutProxy(targetPort, settleMs);
    await new Promise<void>((resolve, reject) => {
      p.server.once('error', reject);
      p.server.listen(0, '127.0.0.1', () => resolve());
    });
    const a = p.server.address();
    p.port = typeof a === 'object' && a ? a.port : 0;
    return p;
  }

  url(chroot = ''): string {
    return `zk://127.0.0.1:${this.port}${chroot}`;
  }

  /** Cut the connection of the next request matching `match`; resolves with that request. */
  arm(match: (r: SeenRequest) => boolean, mode: CutMode): Promise<SeenRequest> {
    return new Promise((resolve) => {
      this.trigger = { match, mode, resolve };
    });
  }

  private accept(client: Socket): void {
    const upstream = connect(this.targetPort, '127.0.0.1');
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on('error', () => undefined);
      s.on('close', () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    let replies = true;
    upstream.on('data', (d) => {
      if (replies) client.write(d);
    });
    let buf = Buffer.alloc(0);
    let first = true;
    let cutting = false;
    client.on('data', (d: Buffer) => {
      if (cutting) return;
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 4) {
        const len = buf.readInt32BE(0);
        if (buf.length < 4 + len) break;
        const frame = buf.subarray(0, 4 + len);
        buf = buf.subarray(4 + len);
        if (first) {
          first = false;
          upstream.write(frame);
          continue;
        }
        const req: SeenRequest = { xid: frame.readInt32BE(4), type: frame.readInt32BE(8), body: frame.subarray(12).toString('latin1') };
        const t = this.trigger;
        if (t && t.match(req)) {
          this.trigger = undefined;
          cutting = true;
          replies = false;
          this.cut.push(req);
          if (t.mode === 'after-forwarding') upstream.write(frame);
          setTimeout(() => {
            client.destroy();
            upstream.destroy();
            t.resolve(req);
          }, this.settleMs);
          return;
        }
        upstream.write(frame);
      }
    });
  }

  async stop(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
