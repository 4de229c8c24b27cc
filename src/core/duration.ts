import { InvalidArgumentError } from './errors.js';

const UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

const PART = /(\d+(?:\.\d+)?)(ms|s|m|h)/y;

/** Milliseconds of a Go-style duration string ("500ms", "1.5m", "1m30s", "2h45m"), or NaN. */
function parseUnits(s: string): number {
  let ms = 0;
  PART.lastIndex = 0;
  while (PART.lastIndex < s.length) {
    const at = PART.lastIndex;
    const m = PART.exec(s);
    if (!m || m.index !== at) return NaN;
    ms += Number(m[1]) * UNITS[m[2]!]!;
  }
  return s.length > 0 ? ms : NaN;
}

/**
 * Parse a duration: a number of milliseconds, or a string like "500ms", "10s", "1.5m", "2h", or
 * Go's compound form ("1m30s", "1h2m3.5s"; units ms, s, m, h). A string of digits alone is
 * milliseconds (the library's historical reading; the CLI refuses it and asks for a unit).
 * Returns milliseconds. Rejects negatives, NaN, infinity and anything above `max`.
 */
export function parseDuration(input: unknown, what = 'duration', { min = 0, max = 7 * 24 * 3_600_000 } = {}): number {
  let ms: number;
  if (typeof input === 'number') {
    ms = input;
  } else if (typeof input === 'string') {
    const t = input.trim();
    ms = /^\d+(?:\.\d+)?$/.test(t) ? Number(t) : parseUnits(t);
    if (Number.isNaN(ms)) throw new InvalidArgumentError(`invalid ${what} ${JSON.stringify(input)}: expected a number with a unit, e.g. 500ms, 10s, 1m30s`);
  } else {
    throw new InvalidArgumentError(`invalid ${what}: expected milliseconds or a string like "10s", got ${input === null ? 'null' : typeof input}`);
  }
  if (!Number.isFinite(ms) || ms < min || ms > max) {
    throw new InvalidArgumentError(`invalid ${what} ${JSON.stringify(input)}: must be between ${formatDuration(min)} and ${formatDuration(max)}`);
  }
  return Math.round(ms);
}

export function formatDuration(ms: number): string {
  if (ms % 3_600_000 === 0 && ms > 0) return `${ms / 3_600_000}h`;
  if (ms % 60_000 === 0 && ms > 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0 && ms > 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** Session TTL bounds shared by every backend's edge validation. */
export const TTL_MIN_MS = 500;
export const TTL_MAX_MS = 24 * 3_600_000;

export function parseTtl(input: unknown): number {
  return parseDuration(input, 'ttl', { min: TTL_MIN_MS, max: TTL_MAX_MS });
}

// ------------------------------------------------------------------ Go durations (Consul's wire format)

const DURATION_RE = /^[-+]?(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h))+$/;
const PART_RE = /(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)/g;
const UNIT_MS: Record<string, number> = { ns: 1e-6, us: 1e-3, 'µs': 1e-3, 'μs': 1e-3, ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

/** Parse a Go duration ("300ms", "1m30s", "-1.5h", "0") into milliseconds. */
export function parseGoDuration(s: string, what: string): number {
  if (s === '0' || s === '+0' || s === '-0') return 0;
  if (s.length > 64 || !DURATION_RE.test(s)) {
    throw new InvalidArgumentError(`invalid ${what} ${JSON.stringify(s.slice(0, 64))}: expected a Go duration such as "10s", "1m30s" or "500ms"`, { details: { field: what } });
  }
  let ms = 0;
  for (const m of s.matchAll(PART_RE)) ms += Number(m[1]) * UNIT_MS[m[2]!]!;
  return s.startsWith('-') ? -ms : ms;
}

/** Render milliseconds as a Go duration string ("10s", "1m30s", "250ms"). */
export function formatGoDuration(ms: number): string {
  if (ms === 0) return '0s';
  if (ms < 1000) return `${+ms.toFixed(6)}ms`;
  let rest = ms / 1000;
  let out = '';
  const h = Math.floor(rest / 3600);
  if (h) out += `${h}h`;
  rest -= h * 3600;
  const m = Math.floor(rest / 60);
  if (h || m) out += `${m}m`;
  rest -= m * 60;
  return out + `${+rest.toFixed(6)}s`;
}

