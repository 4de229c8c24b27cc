/**
 * Incremental Server-Sent Events parser (the subset of the WHATWG algorithm roster needs: `event`,
 * `data` (multi-line joined by '\n'), `id`, comments; LF or CRLF line ends). Feed it byte chunks in
 * order; it calls `onEvent` once per complete event. A partial event at the end of a connection is
 * never dispatched, so a torn stream cannot deliver half a frame.
 *
 * Cost is linear in the input: a long line spread over many chunks is kept as parts and joined
 * once, never rescanned.
 */
export type SseHandler = (event: string, data: string, id: string | undefined) => void;

export class SseParser {
  private readonly decoder = new TextDecoder('utf-8');
  private parts: string[] = [];
  private event = '';
  private data: string | undefined;
  private id: string | undefined;

  constructor(
    private readonly onEvent: SseHandler,
    private readonly onComment?: (text: string) => void,
  ) {}

  push(chunk: Uint8Array): void {
    const text = this.decoder.decode(chunk, { stream: true });
    let start = 0;
    for (;;) {
      const nl = text.indexOf('\n', start);
      if (nl < 0) break;
      let line = text.slice(start, nl);
      if (this.parts.length > 0) {
        this.parts.push(line);
        line = this.parts.join('');
        this.parts = [];
      }
      if (line.endsWith('\r')) line = line.slice(0, -1);
      start = nl + 1;
      this.line(line);
    }
    if (start < text.length) this.parts.push(text.slice(start));
  }

  private line(line: string): void {
    if (line === '') {
      const data = this.data;
      const event = this.event || 'message';
      this.data = undefined;
      this.event = '';
      if (data !== undefined) this.onEvent(event, data, this.id);
      return;
    }
    if (line.charCodeAt(0) === 58 /* ':' */) {
      this.onComment?.(line.slice(1)); // comment (heartbeat)
      return;
    }
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.charCodeAt(0) === 32 /* ' ' */) value = value.slice(1);
    switch (field) {
      case 'data':
        this.data = this.data === undefined ? value : `${this.data}\n${value}`;
        break;
      case 'event':
        this.event = value;
        break;
      case 'id':
        if (!value.includes('\0')) this.id = value;
        break;
      default:
        // 'retry' and unknown fields: nothing to do for this client.
        break;
    }
  }
}
