/** A raw SSE client for protocol tests: frames as they are on the wire, plus heartbeat counting. */
import { get } from 'node:http';
import type { IncomingMessage } from 'node:http';
import { Channel } from '../../src/core/channel.js';
import { SseParser } from '../../src/backends/remote/sse.js';
import { Reader } from './watch.js';

export interface Frame {
  event: string;
  id: string | undefined;
  data: unknown;
}

export interface SseClient {
  status: number;
  headers: IncomingMessage['headers'];
  frames: Reader<Frame>;
  /** Heartbeat comments received so far. */
  heartbeats(): number;
  /** True once the server ended the stream. */
  ended(): boolean;
  /** The local port of the stream's connection (the server sees it as the peer's). */
  localPorts(): number[];
  close(): void;
}

export function openSse(base: string, path: string, headers: Record<string, string> = {}): Promise<SseClient> {
  const u = new URL(path, base);
  return new Promise((resolve, reject) => {
    const req = get(u, { headers: { accept: 'text/event-stream', ...headers }, agent: false }, (res) => {
      const ch = new Channel<Frame>(() => req.destroy());
      let beats = 0;
      let ended = false;
      const parser = new SseParser(
        (event, data, id) => ch.push({ event, id, data: JSON.parse(data) }),
        () => beats++,
      );
      res.on('data', (chunk: Buffer) => parser.push(chunk));
      res.on('end', () => {
        ended = true;
        ch.end();
      });
      res.on('error', (e) => ch.end(e));
      resolve({
        status: res.statusCode ?? 0,
        headers: res.headers,
        frames: new Reader(ch),
        heartbeats: () => beats,
        ended: () => ended,
        localPorts: () => (req.socket?.localPort !== undefined ? [req.socket.localPort] : []),
        close: () => {
          ch.end();
          req.destroy();
        },
      });
    });
    req.on('error', reject);
  });
}
