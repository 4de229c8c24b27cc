/**
 * Parsers for the values of the CLI's flags and arguments. Each failure is an
 * InvalidArgumentError (exit 2) naming the flag, the value and what is allowed.
 *
 * Durations: Go's syntax with a unit on every number (`500ms`, `10s`, `1m30s`, `2h`). A bare
 * number is refused with a message that says which unit to add (the library reads a bare number as
 * milliseconds; on a command line `--timeout 2` almost always meant seconds).
 */
import { parseDuration, TTL_MAX_MS, TTL_MIN_MS } from '../core/duration.js';
import { InvalidArgumentError } from '../core/errors.js';
import { parseHostPort } from '../core/names.js';

/** Collect a repeatable flag: --tag a --tag b. (config.ts recognises repeatable flags by it.) */
export function collect(v: string, prev: string[] = []): string[] {
  return [...prev, v];
}

const q = (s: string) => JSON.stringify(s);

export function duration(value: string, flag: string, bounds: { min?: number; max?: number } = {}): number {
  const v = String(value).trim();
  if (/^\d+(\.\d+)?$/.test(v) && !/^0+(\.0+)?$/.test(v)) {
    throw new InvalidArgumentError(`invalid --${flag} ${q(v)}: a duration needs a unit: ${v}s, ${v}ms or ${v}m (Go style, e.g. 1m30s)`);
  }
  return parseDuration(v, `--${flag}`, { min: bounds.min ?? 0, max: bounds.max ?? 7 * 24 * 3_600_000 });
}

/** A session / lease TTL (500ms to 24h). */
export function ttl(value: string, flag = 'ttl'): number {
  return duration(value, flag, { min: TTL_MIN_MS, max: TTL_MAX_MS });
}

/** `--give-up-after`: a duration, or `never` (the default of every long-running command). */
export function giveUpAfter(value: string | undefined): number | undefined {
  if (value === undefined || value === 'never') return undefined;
  return duration(value, 'give-up-after', { min: 1 });
}

export function integer(value: string, flag: string, min: number, max: number): number {
  const v = String(value).trim();
  if (!/^\d+$/.test(v) || Number(v) < min || Number(v) > max) {
    throw new InvalidArgumentError(`invalid --${flag} ${q(v)}: expected an integer from ${min} to ${max}`);
  }
  return Number(v);
}

/**
 * An instance's address: host and port, both required (`127.0.0.1:9001`, `orders-1.internal:80`,
 * `[::1]:9001`). A missing host (`:9000`) or port is refused: a registration that names no
 * reachable endpoint would be picked and fail.
 */
export function endpoint(value: string, what = 'address'): { address: string; port: number } {
  const bad = (why: string) =>
    new InvalidArgumentError(`invalid ${what} ${q(value)}: ${why}; expected host:port, e.g. 127.0.0.1:9001, orders-1.internal:80 or [::1]:9001`);
  if (value.startsWith(':')) throw bad('the host is missing');
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) throw bad('no scheme');
  let hp: { address: string; port?: number };
  try {
    hp = parseHostPort(value);
  } catch (e) {
    throw bad(/^invalid port/.test((e as Error).message) ? 'the port is not 1-65535' : 'the host is not a valid host name or IP address');
  }
  if (hp.port === undefined) throw bad('the port is missing');
  return { address: hp.address, port: hp.port };
}

/** --meta k=v pairs. */
export function keyValues(pairs: readonly string[] | undefined, flag: string): Record<string, string> {
  const o: Record<string, string> = {};
  for (const p of pairs ?? []) {
    const i = p.indexOf('=');
    if (i <= 0) throw new InvalidArgumentError(`invalid --${flag} ${q(p)}: expected key=value`);
    o[p.slice(0, i)] = p.slice(i + 1);
  }
  return o;
}

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1024, kb: 1024, kib: 1024, m: 1024 ** 2, mb: 1024 ** 2, mib: 1024 ** 2, g: 1024 ** 3, gb: 1024 ** 3, gib: 1024 ** 3 };

/** Bytes from "65536", "64k", "64MiB", "1G" (binary units). */
export function size(value: string, flag: string, min: number): number {
  const m = /^(\d+)\s*([a-z]*)$/i.exec(String(value).trim());
  const unit = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  const n = m && unit !== undefined ? Number(m[1]) * unit : NaN;
  if (!Number.isSafeInteger(n) || n < min) {
    throw new InvalidArgumentError(`invalid --${flag} ${q(value)}: expected a size of at least ${min} bytes, like 65536, 64KiB or 64MiB`);
  }
  return n;
}

/** `host:port` for a listener (`--dns 127.0.0.1:8600`); the port may be 0 (any free port). */
export function listenAddress(value: string, flag: string, defaultPort: number): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]*))(?::(\d{1,5}))?$/.exec(value);
  const host = m?.[1] ?? m?.[2] ?? '';
  const port = m?.[3] === undefined ? defaultPort : Number(m[3]);
  if (!m || host === '' || port > 65535) {
    throw new InvalidArgumentError(`invalid --${flag} ${q(value)}: expected host:port, e.g. 127.0.0.1:8600`);
  }
  return { host, port };
}
