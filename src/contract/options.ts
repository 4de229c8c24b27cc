import { readFileSync } from 'node:fs';
import { InvalidArgumentError } from '../core/errors.js';
import { parseDuration } from '../core/duration.js';

/**
 * Typed, validated backend options. Each backend declares a spec (option name → reader); `readOptions`
 * applies it at the edge: an option the spec does not name is an error on every backend (a typo
 * must not silently fall back to a default), and each value is checked and normalised by its reader.
 */
export type OptionReader<T> = (value: unknown, name: string) => T;
export type OptionSpec<T> = { readonly [K in keyof T]-?: OptionReader<T[K]> };

/** Options every backend accepts (BackendBase applies them). */
export interface CommonBackendOptions {
  /** Hold the process open while a session or watch of this backend is live (default true;
   *  see core/lifetime.ts). */
  keepProcessAlive?: boolean;
}

export const commonOptionSpec: OptionSpec<CommonBackendOptions> = {
  keepProcessAlive: optional(boolean),
};

export function readOptions<T>(backend: string, spec: OptionSpec<T>, options: unknown): T {
  if (options === undefined || options === null) options = {};
  if (typeof options !== 'object' || Array.isArray(options)) {
    throw new InvalidArgumentError(`invalid ${backend} options: expected an object`);
  }
  const o = options as Record<string, unknown>;
  const known = Object.keys(spec);
  for (const k of Object.keys(o)) {
    if (!known.includes(k) && o[k] !== undefined) {
      throw new InvalidArgumentError(`unknown ${backend} option ${JSON.stringify(k)}: expected ${known.length ? `one of ${known.join(', ')}` : 'no options'}`, {
        details: { field: k },
      });
    }
  }
  const out: Record<string, unknown> = {};
  for (const k of known) {
    const v = (spec as Record<string, OptionReader<unknown>>)[k]!(o[k], `${backend} option ${k}`);
    if (v !== undefined) out[k] = v;
  }
  return out as T;
}

/** An optional option: undefined / null pass as undefined, anything else goes to `read`. */
export function optional<T>(read: OptionReader<T>): OptionReader<T | undefined> {
  return (v, name) => (v === undefined || v === null ? undefined : read(v, name));
}

export function boolean(v: unknown, name: string): boolean {
  if (typeof v !== 'boolean') throw new InvalidArgumentError(`invalid ${name}: expected true or false`);
  return v;
}

export function string(v: unknown, name: string): string {
  if (typeof v !== 'string') throw new InvalidArgumentError(`invalid ${name}: expected a string`);
  return v;
}

export function positiveNumber(v: unknown, name: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw new InvalidArgumentError(`invalid ${name}: expected a positive number`);
  return v;
}

/** A duration: milliseconds or a string like "5s", within [min, max] ms. */
export function duration(min = 1, max = 24 * 3_600_000): OptionReader<number> {
  return (v, name) => parseDuration(v, name, { min, max });
}

/** TLS material given as PEM contents (a string holding "-----BEGIN", or a Buffer) or a file path. */
export function pemMaterial(v: unknown, what: string): Buffer | undefined {
  if (v === undefined || v === null) return undefined;
  if (Buffer.isBuffer(v)) return v;
  if (typeof v === 'string') {
    if (v.includes('-----BEGIN')) return Buffer.from(v);
    try {
      return readFileSync(v);
    } catch (e) {
      throw new InvalidArgumentError(`cannot read TLS ${what} file ${JSON.stringify(v)}: ${(e as Error).message}`, { cause: e });
    }
  }
  throw new InvalidArgumentError(`invalid TLS ${what}: expected PEM contents or a file path`);
}
