/**
 * The remote backend's SSE parser (src/backends/remote/sse.ts) works on bytes, not on decoded text:
 * whatever the chunking, it must dispatch exactly the events of the whole stream. Every stream is
 * fed whole, split in two at every byte boundary, and byte by byte; the result must be the same.
 */
import { describe, expect, it } from 'vitest';
import { SseParser } from '../../src/backends/remote/sse.js';

interface Got {
  event: string;
  data: string;
  id: string | undefined;
}

function parse(chunks: Uint8Array[]): { events: Got[]; comments: string[] } {
  const events: Got[] = [];
  const comments: string[] = [];
  const p = new SseParser(
    (event, data, id) => events.push({ event, data, id }),
    (text) => comments.push(text),
  );
  for (const c of chunks) p.push(c);
  return { events, comments };
}

/** The stream whole, in two pieces split at every offset, and one byte at a time: all the same. */
function sameEverywhere(bytes: Buffer): { events: Got[]; comments: string[] } {
  const whole = parse([bytes]);
  for (let i = 0; i <= bytes.length; i++) {
    // (A plain Uint8Array for the second piece: the parser takes either.)
    const split = parse([bytes.subarray(0, i), new Uint8Array(bytes.subarray(i))]);
    expect(split, `split at byte ${i}`).toEqual(whole);
  }
  const single = parse([...bytes].map((b) => Buffer.from([b])));
  expect(single, 'byte by byte').toEqual(whole);
  return whole;
}

describe('remote backend: SSE parser', () => {
  it('frames as roster sends them, with LF line ends', () => {
    const r = sameEverywhere(
      Buffer.from(
        'retry: 1000\n\n' +
          'id: 7\nevent: snapshot\ndata: {"revision":7,"items":[]}\n\n' +
          'id: 7\nevent: synced\ndata: {"revision":7}\n\n' +
          ':\n\n' +
          'id: 8\nevent: put\ndata: {"type":"put","key":"a","revision":8}\n\n' +
          'id: 9\nevent: delete\ndata: {"type":"delete","key":"a","revision":9}\n\n',
      ),
    );
    expect(r.events).toEqual([
      { event: 'snapshot', data: '{"revision":7,"items":[]}', id: '7' },
      { event: 'synced', data: '{"revision":7}', id: '7' },
      { event: 'put', data: '{"type":"put","key":"a","revision":8}', id: '8' },
      { event: 'delete', data: '{"type":"delete","key":"a","revision":9}', id: '9' },
    ]);
    expect(r.comments).toEqual(['']);
  });

  it('CRLF line ends, multi-line data, comments, unknown fields, a field without a colon, one leading space stripped', () => {
    const r = sameEverywhere(
      Buffer.from(
        ': hello there\r\n' +
          'event: custom-name\r\ndata: line one\r\ndata:line two\r\ndata:  two spaces\r\nfoo: bar\r\nretry: 5\r\n\r\n' +
          'data\r\ndata: \r\n\r\n' + // "data" alone is an empty value; two data lines: "\n"
          'event: ignored because no data\r\n\r\n' +
          'data: after an event without data\n\n',
      ),
    );
    expect(r.comments).toEqual([' hello there']);
    expect(r.events).toEqual([
      { event: 'custom-name', data: 'line one\nline two\n two spaces', id: undefined },
      { event: 'message', data: '\n', id: undefined },
      { event: 'message', data: 'after an event without data', id: undefined },
    ]);
  });

  it('UTF-8 across chunk boundaries, a leading BOM skipped, a mid-stream U+FEFF kept', () => {
    const text = 'ünïcödé 日本語 🚀';
    const r = sameEverywhere(Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(`data: ${text}\n\ndata: \uFEFFx\n\n`)]));
    expect(r.events.map((e) => e.data)).toEqual([text, '\uFEFFx']);
    // A stream that starts with a byte like the BOM's first, but is not a BOM.
    const notBom = Buffer.concat([Buffer.from([0xef, 0xbb]), Buffer.from('Xdata: x\n\ndata: y\n\n')]);
    expect(sameEverywhere(notBom).events.map((e) => e.data)).toEqual(['y']);
  });

  it('resume ids: the last id stays until replaced; an id holding NUL is ignored; an empty id clears it', () => {
    const r = sameEverywhere(Buffer.from('id: 41\ndata: a\n\ndata: b\n\nid: 4\u00002\ndata: c\n\nid: 43\ndata: d\n\nid\ndata: e\n\n'));
    expect(r.events.map((e) => [e.data, e.id])).toEqual([
      ['a', '41'],
      ['b', '41'],
      ['c', '41'],
      ['d', '43'],
      ['e', ''],
    ]);
  });

  it('a torn last event is never dispatched', () => {
    for (const tail of ['id: 5\nevent: put\ndata: {"half"', 'data: complete line\n', 'data: x\r\n\r']) {
      const r = sameEverywhere(Buffer.from(`data: first\n\n${tail}`));
      expect(r.events.map((e) => e.data), JSON.stringify(tail)).toEqual(['first']);
    }
  });

  it('huge events (8 MiB data line, 20,000 data lines) arrive whole, whatever the chunking', () => {
    const big = 'x'.repeat(8 * 1024 * 1024 - 3) + 'é!'; // multi-byte char near the end
    const lines = Array.from({ length: 20_000 }, (_, i) => `l${i}`);
    const bytes = Buffer.from(`id: 1\nevent: snapshot\ndata: ${big}\n\n:\n\nid: 2\ndata: ${lines.join('\ndata: ')}\n\ndata: after\n\n`);
    let seed = 12345;
    const rand = (n: number): number => ((seed = (seed * 1103515245 + 12345) >>> 0) % n) + 1;
    for (const size of [1 << 16, 4093, 'random'] as const) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < bytes.length; ) {
        const n = size === 'random' ? rand(200_000) : size;
        chunks.push(bytes.subarray(i, i + n));
        i += n;
      }
      const r = parse(chunks);
      expect(r.events.length, `chunks of ${size}`).toBe(3);
      expect(r.events[0]!.data === big, `chunks of ${size}`).toBe(true);
      expect(r.events[0]!.id).toBe('1');
      expect(r.events[1]!.data === lines.join('\n'), `chunks of ${size}`).toBe(true);
      expect(r.events[2]).toEqual({ event: 'message', data: 'after', id: '2' });
    }
  });

  it('parsers of one process share decoded values, and never hand out a stale one', () => {
    const a = parse([Buffer.from('id: 10\nevent: put\ndata: {"k":"abc"}\n\n')]).events[0]!;
    const b = parse([Buffer.from('id: 10\nevent: put\ndata: {"k":"abc"}\n\n')]).events[0]!;
    expect(b).toEqual(a);
    // Same length, different bytes: a fresh value each time.
    const c = parse([Buffer.from('id: 11\nevent: put\ndata: {"k":"abd"}\n\n')]).events[0]!;
    expect(c).toEqual({ event: 'put', data: '{"k":"abd"}', id: '11' });
    const d = parse([Buffer.from('id: 10\nevent: put\ndata: {"k":"abc"}\n\n')]).events[0]!;
    expect(d).toEqual(a);
    // Chunk memory reused by the caller after push() (as a socket reader may): values already
    // dispatched, and the line held across chunks, are not affected.
    const events: string[] = [];
    const p = new SseParser((_e, data) => events.push(data));
    const buf = Buffer.from('data: first\n\ndata: sec');
    p.push(buf);
    buf.fill(0x7a); // 'z'
    p.push(Buffer.from('ond\n\n'));
    expect(events).toEqual(['first', 'second']);
  });
});
