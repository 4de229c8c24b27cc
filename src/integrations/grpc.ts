/**
 * A @grpc/grpc-js (1.14) name resolver for `roster:///<service>`: the channel's address list
 * follows the registry live (list + watch through a Discovery's ServiceCache), so
 * `new Client('roster:///orders', credentials)` reaches every registered instance and stops using
 * one as soon as it is deregistered or expires.
 *
 * Contract with grpc-js (resolver.ts in 1.14): the listener is never called synchronously from the
 * constructor or updateResolution() (results are pushed on a later tick, coalesced), and never
 * after destroy() until updateResolution() starts it again. Unless the channel sets
 * `grpc.service_config`, each result carries a service config selecting `round_robin` (grpc's
 * default, pick_first, would send every call to one instance).
 */
import * as grpc from '@grpc/grpc-js';
import { InvalidArgumentError } from '../core/errors.js';
import type { Instance } from '../core/model.js';
import { validateServiceName } from '../core/names.js';
import type { ServiceCache } from '../registry/cache.js';
import { Discovery } from '../registry/discovery.js';

type GrpcUri = grpc.experimental.GrpcUri;
type Listener = grpc.experimental.ResolverListener;
type Endpoint = grpc.experimental.Endpoint;
/** grpc-js's ResolverConstructor (not re-exported by its experimental API). */
type ResolverConstructor = Parameters<typeof grpc.experimental.registerResolver>[1];

export interface RosterResolverOptions {
  /** URI scheme to register (default "roster"). */
  scheme?: string;
  /** Load-balancing config sent with every result unless the channel sets grpc.service_config
   *  (default [{ round_robin: {} }]). */
  loadBalancingConfig?: Record<string, object>[];
  /** Use only instances carrying all these tags (e.g. ["grpc"]). */
  tags?: string[];
  /** Port from instance metadata (e.g. "grpcPort") instead of the instance's port. */
  portMetadataKey?: string;
}

interface Binding {
  discovery: Discovery;
  opts: RosterResolverOptions;
}

/** scheme → authority → binding. `roster:///svc` uses authority ''; `roster://name/svc` uses "name". */
const bindings = new Map<string, Map<string, Binding>>();

/** The address list for grpc: up instances (draining ones only if none is up), weight > 0, with a port. */
export function endpointsOf(instances: readonly Instance[], opts: Pick<RosterResolverOptions, 'tags' | 'portMetadataKey'> = {}): Endpoint[] {
  const usable = instances.filter((i) => i.weight > 0 && (!opts.tags || opts.tags.every((t) => i.tags.includes(t))));
  const up = usable.filter((i) => i.status === 'up' && i.health !== 'critical');
  const out: Endpoint[] = [];
  for (const i of up.length > 0 ? up : usable) {
    const raw = opts.portMetadataKey !== undefined ? i.metadata[opts.portMetadataKey] : undefined;
    const port = raw !== undefined ? Number(raw) : i.port;
    if (port === undefined || !Number.isInteger(port) || port < 1 || port > 65535) continue;
    out.push({ addresses: [{ host: i.address, port }] });
  }
  return out;
}

function serviceOf(target: GrpcUri): string {
  return target.path.replace(/^\/+/, '');
}

/** Build the resolver class for one scheme (exported for tests; use registerRosterResolver). */
export function rosterResolverClass(scheme = 'roster'): ResolverConstructor {
  return class RosterResolver implements grpc.experimental.Resolver {
    private cache: ServiceCache | undefined;
    private offs: (() => void)[] = [];
    private scheduled: NodeJS.Immediate | undefined;
    private destroyed = false;
    private readonly serviceConfig: grpc.experimental.StatusOr<never> | null;

    constructor(
      private readonly target: GrpcUri,
      private readonly listener: Listener,
      channelOptions: grpc.ChannelOptions,
    ) {
      const binding = bindings.get(scheme)?.get(target.authority ?? '');
      const lb = binding?.opts.loadBalancingConfig ?? [{ round_robin: {} }];
      this.serviceConfig = channelOptions['grpc.service_config'] ? null : (grpc.experimental.statusOrFromValue({ loadBalancingConfig: lb, methodConfig: [] }) as grpc.experimental.StatusOr<never>);
      this.start();
    }

    static getDefaultAuthority(target: GrpcUri): string {
      return serviceOf(target);
    }

    private start(): void {
      this.destroyed = false;
      const binding = bindings.get(scheme)?.get(this.target.authority ?? '');
      const service = serviceOf(this.target);
      try {
        if (!binding) throw new InvalidArgumentError(`no roster discovery registered for ${scheme}://${this.target.authority ?? ''}/: call registerRosterResolver(discovery) first`);
        validateServiceName(service);
        this.cache = binding.discovery.cache(service);
      } catch (e) {
        this.cache = undefined;
        this.schedule((e as Error).message);
        return;
      }
      const push = () => this.schedule();
      this.offs = [this.cache.on('change', push), this.cache.on('synced', push)];
      if (this.cache.synced) push();
    }

    /** Push the current state on a later tick (coalesced): never synchronously. */
    private schedule(errorMessage?: string): void {
      if (this.scheduled || this.destroyed) return;
      this.scheduled = setImmediate(() => {
        this.scheduled = undefined;
        if (this.destroyed) return;
        if (errorMessage !== undefined) return this.reportError(errorMessage);
        const cache = this.cache;
        if (!cache || !cache.synced) return; // nothing known yet: calls wait for the first result
        const binding = bindings.get(scheme)?.get(this.target.authority ?? '');
        const endpoints = endpointsOf(cache.instances, binding?.opts ?? {});
        if (endpoints.length === 0) return this.reportError(cache.describeEmpty());
        this.listener(grpc.experimental.statusOrFromValue(endpoints), {}, this.serviceConfig, '');
      });
    }

    private reportError(details: string): void {
      this.listener(grpc.experimental.statusOrFromError({ code: grpc.status.UNAVAILABLE, details, metadata: new grpc.Metadata() }), {}, this.serviceConfig, details);
    }

    updateResolution(): void {
      // The cache is live: there is nothing to re-query; repeat the current state (asynchronously).
      if (this.destroyed || !this.cache) {
        for (const off of this.offs) off();
        this.offs = [];
        this.start(); // after destroy(), or after a failed start (e.g. bound since)
      } else {
        this.schedule();
      }
    }

    destroy(): void {
      this.destroyed = true;
      for (const off of this.offs) off();
      this.offs = [];
      if (this.scheduled) clearImmediate(this.scheduled);
      this.scheduled = undefined;
    }
  };
}

const registeredSchemes = new Set<string>();

/**
 * Make `<scheme>:///<service>` (default `roster:///<service>`) resolve through `discovery`.
 * `authority` binds another discovery under `roster://<authority>/<service>`. Returns a function
 * that unbinds it (channels created later fail to resolve; existing resolvers keep their cache).
 */
export function registerRosterResolver(discovery: Discovery, opts: RosterResolverOptions & { authority?: string } = {}): () => void {
  if (!(discovery instanceof Discovery)) throw new InvalidArgumentError('registerRosterResolver needs a Discovery');
  const scheme = opts.scheme ?? 'roster';
  if (!/^[a-z][a-z0-9+.-]*$/.test(scheme)) throw new InvalidArgumentError(`invalid scheme ${JSON.stringify(scheme)}`);
  const authority = opts.authority ?? '';
  let byAuthority = bindings.get(scheme);
  if (!byAuthority) bindings.set(scheme, (byAuthority = new Map()));
  const binding: Binding = { discovery, opts };
  byAuthority.set(authority, binding);
  if (!registeredSchemes.has(scheme)) {
    grpc.experimental.registerResolver(scheme, rosterResolverClass(scheme));
    registeredSchemes.add(scheme);
  }
  return () => {
    if (byAuthority.get(authority) === binding) byAuthority.delete(authority);
  };
}
