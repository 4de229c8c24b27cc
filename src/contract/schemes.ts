import type { Backend } from './types.js';
import { InvalidArgumentError } from '../core/errors.js';

/**
 * The scheme registry behind `openBackend(url)`, in the manner of grpc-go's `balancer.Register`:
 * this layer knows no implementation. Each backend registers the URL schemes it serves
 * (src/backends/<name>/scheme.ts) and loads its implementation only when a URL of its scheme is
 * opened, so an application that uses only etcd never loads the ZooKeeper client. The package
 * root registers the built-in backends (src/backends/builtin.ts); a third-party backend registers
 * itself the same way when its module is imported.
 */
export interface BackendScheme {
  /** Human name for messages ("etcd"). */
  readonly name: string;
  /** URL schemes served, without "://" (case-insensitive). */
  readonly schemes: readonly string[];
  /** What a URL looks like, for error messages. */
  readonly example: string;
  /** Open a backend for `url`. Options are validated by the backend itself: an option it does not
   *  know is INVALID_ARGUMENT. */
  open(url: string, options: unknown): Promise<Backend>;
}

/**
 * Options per URL scheme, for typed `openBackend('etcd://...', { ... })` calls. Each backend's
 * scheme module adds its entries by declaration merging.
 */
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface BackendOptionsByScheme {}

const registry = new Map<string, BackendScheme>();

/** Register (or replace: the last registration of a scheme wins) a backend's URL schemes. */
export function registerBackend(def: BackendScheme): void {
  for (const s of def.schemes) registry.set(s.toLowerCase(), def);
}

/** The URL schemes openBackend() serves right now. */
export function backendSchemes(): string[] {
  return [...registry.keys()].sort();
}

type KnownScheme = keyof BackendOptionsByScheme & string;

/** The options type for a URL: its scheme's when the URL is a literal of a known scheme. */
export type BackendOptionsFor<U extends string> = U extends `${infer S}://${string}`
  ? Lowercase<S> extends KnownScheme
    ? BackendOptionsByScheme[Lowercase<S>]
    : Record<string, unknown>
  : Record<string, unknown>;

/**
 * Open a backend by URL, e.g.
 *   memory://[name]                     in-process (same name → same store within this process)
 *   http://host:port                    roster server
 *   etcd://h1:2379[,h2:2379]/prefix     etcd v3
 *   zk://h1:2181[,h2:2181]/chroot       ZooKeeper
 *   consul://h1:8500[,h2:8500]/prefix   Consul (consuls:// for HTTPS)
 * `options` are the backend's own (typed per scheme); unknown ones are INVALID_ARGUMENT.
 */
export async function openBackend<U extends string>(url: U, options?: BackendOptionsFor<U>): Promise<Backend> {
  const m = typeof url === 'string' ? /^([a-z][a-z0-9+.-]*):\/\//i.exec(url) : null;
  const def = m ? registry.get(m[1]!.toLowerCase()) : undefined;
  if (!def) {
    const known = [...new Set(registry.values())].map((d) => d.example).join(', ');
    throw new InvalidArgumentError(`unsupported backend URL ${JSON.stringify(url)}: expected ${known || 'a registered backend scheme'}`);
  }
  return def.open(url, options ?? {});
}
