import { InvalidArgumentError } from '../core/errors.js';
import { describeValue } from './http.js';

/**
 * The server's structured log (docs/operations.md, "Logs"): one line per event, with a level, a
 * stable event name (`session.expired`, `storage.failed`, `http.server_error`...), a human message
 * and the event's fields. Two formats of the same record:
 *
 *   json   {"time":"2025-01-01T10:00:00.000Z","level":"info","event":"session.expired","msg":"...","session":"9f2c","keys":2}
 *   text   2025-01-01T10:00:00.000Z INFO  session.expired: session 9f2c expired ... session=9f2c keys=2
 *
 * Events that a misbehaving client or a mass expiry can repeat without bound are rate-limited per
 * event name (`limited`): at most `burst` lines per `windowMs`, then one line saying how many were
 * left out when the window ends. Writing is synchronous to stderr by default (a log line must not be
 * lost to a crash right after it), so a line costs a write(2) — the reason for the limiter.
 */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
export type LogFormat = 'text' | 'json';
export const LOG_LEVELS: readonly LogLevel[] = ['debug', 'info', 'warn', 'error'];
export const LOG_FORMATS: readonly LogFormat[] = ['text', 'json'];
const RANK: Readonly<Record<LogLevel, number>> = { debug: 0, info: 1, warn: 2, error: 3 };

export type LogFields = Readonly<Record<string, unknown>>;

export interface LogOptions {
  /** Lowest level written (default: `info` for `roster server`, `warn` for startServer()). */
  level?: LogLevel;
  /** Default `text`. */
  format?: LogFormat;
  /** Where a formatted line (without its newline) goes. Default: stderr, synchronously. */
  write?: (line: string) => void;
  /** Rate limit of limited events: lines per window (default 50 per 10 s per event name). */
  burst?: number;
  windowMs?: number;
  now?: () => number;
}

export function validateLogOptions(o: LogOptions | undefined): void {
  if (!o) return;
  if (o.level !== undefined && !LOG_LEVELS.includes(o.level)) throw new InvalidArgumentError(`invalid log level ${describeValue(o.level)}: expected ${LOG_LEVELS.join(', ')}`);
  if (o.format !== undefined && !LOG_FORMATS.includes(o.format)) throw new InvalidArgumentError(`invalid log format ${describeValue(o.format)}: expected ${LOG_FORMATS.join(', ')}`);
}

interface Window {
  start: number;
  written: number;
  dropped: number;
  level: LogLevel;
}

export class Logger {
  readonly level: LogLevel;
  readonly format: LogFormat;
  private readonly min: number;
  private readonly out: (line: string) => void;
  private readonly burst: number;
  private readonly windowMs: number;
  private readonly now: () => number;
  private readonly windows = new Map<string, Window>();
  private flushTimer: NodeJS.Timeout | undefined;
  /** Lines left out by the rate limit (all events). */
  suppressed = 0;

  constructor(opts: LogOptions = {}, defaultLevel: LogLevel = 'info') {
    validateLogOptions(opts);
    this.level = opts.level ?? defaultLevel;
    this.format = opts.format ?? 'text';
    this.min = RANK[this.level];
    this.out = opts.write ?? ((line) => process.stderr.write(line + '\n'));
    this.burst = opts.burst ?? 50;
    this.windowMs = opts.windowMs ?? 10_000;
    this.now = opts.now ?? Date.now;
  }

  enabled(level: LogLevel): boolean {
    return RANK[level] >= this.min;
  }

  debug(event: string, msg: string, fields?: LogFields): void {
    this.log('debug', event, msg, fields);
  }
  info(event: string, msg: string, fields?: LogFields): void {
    this.log('info', event, msg, fields);
  }
  warn(event: string, msg: string, fields?: LogFields): void {
    this.log('warn', event, msg, fields);
  }
  error(event: string, msg: string, fields?: LogFields): void {
    this.log('error', event, msg, fields);
  }

  log(level: LogLevel, event: string, msg: string, fields?: LogFields): void {
    if (RANK[level] < this.min) return;
    this.write(level, event, msg, fields);
  }

  /** As log(), under the per-event rate limit. */
  limited(level: LogLevel, event: string, msg: string, fields?: LogFields): void {
    if (RANK[level] < this.min) return;
    const now = this.now();
    let w = this.windows.get(event);
    if (w && now - w.start >= this.windowMs) {
      this.report(event, w);
      w = undefined;
    }
    if (!w) {
      w = { start: now, written: 0, dropped: 0, level };
      this.windows.set(event, w);
      this.armFlush();
    }
    if (w.written < this.burst) {
      w.written++;
      this.write(level, event, msg, fields);
    } else {
      w.dropped++;
      this.suppressed++;
    }
  }

  /** Say what the rate limit left out (on close, and when a window ends). */
  flush(): void {
    if (this.flushTimer) clearTimeout(this.flushTimer);
    this.flushTimer = undefined;
    for (const [event, w] of this.windows) this.report(event, w);
    this.windows.clear();
  }

  private report(event: string, w: Window): void {
    this.windows.delete(event);
    if (w.dropped === 0) return;
    this.write(w.level, 'log.suppressed', `${w.dropped} more ${event} line(s) left out in ${Math.round(this.windowMs / 1000)} s (at most ${this.burst} per window)`, {
      suppressedEvent: event,
      count: w.dropped,
    });
  }

  private armFlush(): void {
    if (this.flushTimer) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      const now = this.now();
      for (const [event, w] of [...this.windows]) if (now - w.start >= this.windowMs) this.report(event, w);
      if (this.windows.size > 0) this.armFlush();
    }, this.windowMs);
    this.flushTimer.unref();
  }

  private write(level: LogLevel, event: string, msg: string, fields?: LogFields): void {
    const time = new Date(this.now()).toISOString();
    let line: string;
    if (this.format === 'json') {
      line = JSON.stringify({ time, level, event, msg, ...fields }, jsonSafe);
    } else {
      line = `${time} ${level.toUpperCase().padEnd(5)} ${event}: ${msg}`;
      if (fields) for (const [k, v] of Object.entries(fields)) if (v !== undefined) line += ` ${k}=${textValue(v)}`;
    }
    try {
      this.out(line);
    } catch {
      // stderr gone (EPIPE): nothing more useful can be done with a log line
    }
  }
}

function jsonSafe(_k: string, v: unknown): unknown {
  if (typeof v === 'bigint') return v.toString();
  if (v instanceof Error) return v.message;
  return v;
}

/** logfmt-style value: bare when it is a plain token, else JSON-quoted. */
function textValue(v: unknown): string {
  const s = typeof v === 'string' ? v : v instanceof Error ? v.message : JSON.stringify(v, jsonSafe) ?? String(v);
  return typeof v === 'string' && /^[A-Za-z0-9_.:/@+-]+$/.test(s) ? s : typeof v === 'string' ? JSON.stringify(s) : s;
}
