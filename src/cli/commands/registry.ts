import { Command } from 'commander';
import type { Backend } from '../../contract/types.js';
import { formatDuration, parseTtl } from '../../core/duration.js';
import { InvalidArgumentError } from '../../core/errors.js';
import { instanceEndpoint } from '../../core/model.js';
import { parseHostPort, validateServiceName } from '../../core/names.js';
import { Registrar } from '../../registry/registrar.js';
import { ServiceCache } from '../../registry/cache.js';
import { strategy as makeStrategy } from '../../balance/index.js';
import { onTerminate } from '../../integrations/process.js';
import { collect, describeError, layoutFrom, layoutOptions, out, parseKeyValues, parsePositiveInt } from '../shared.js';

export function registerRegistryCommands(program: Command, getBackend: () => Promise<Backend>): void {
  layoutOptions(
    program
      .command('register <service> <address>')
      .description('register an instance (host:port) and keep it registered until interrupted')
      .option('--id <id>', 'instance id (default: host:port)')
      .option('--ttl <duration>', 'lease TTL: the instance disappears this long after the process dies', '10s')
      .option('--meta <k=v>', 'metadata entry (repeatable)', collect)
      .option('--tag <tag>', 'tag (repeatable)', collect)
      .option('--weight <n>', 'relative weight for weighted strategies (0-10000)')
      .option('--zone <zone>', 'zone for zone-aware balancing'),
  ).action(
    async (
      service: string,
      address: string,
      opts: { id?: string; ttl: string; meta?: string[]; tag?: string[]; weight?: string; zone?: string; layout?: string; root?: string },
    ) => {
      validateServiceName(service);
      const ttl = parseTtl(opts.ttl);
      const hp = parseHostPort(address);
      const input = {
        service,
        address: hp.address,
        ...(hp.port !== undefined ? { port: hp.port } : {}),
        ...(opts.id !== undefined ? { id: opts.id } : {}),
        metadata: parseKeyValues(opts.meta, 'meta'),
        tags: opts.tag ?? [],
        ...(opts.weight !== undefined ? { weight: parsePositiveInt(opts.weight, 'weight', 0, 10000) } : {}),
        ...(opts.zone !== undefined ? { zone: opts.zone } : {}),
      };
      const backend = await getBackend();
      const registrar = new Registrar(backend, { ttl, layout: layoutFrom(opts) });
      registrar.on('lost', (e) => process.stderr.write(`roster: registration lost: ${describeError(e.cause ?? e)}; re-registering\n`));
      registrar.on('restored', () => process.stderr.write('roster: registration restored\n'));
      registrar.on('error', (e) => process.stderr.write(`roster: ${e.op} failed: ${describeError(e.error)}\n`));
      const terminated = onTerminate();
      try {
        const reg = await registrar.register(input);
        out(`registered ${service}/${reg.instance.id} at ${instanceEndpoint(reg.instance)} (ttl ${formatDuration(ttl)}); Ctrl-C to deregister`);
        await terminated;
      } finally {
        await registrar.close();
      }
      out(`deregistered ${service}`);
    },
  );

  layoutOptions(
    program
      .command('pick <service>')
      .description('choose instance(s) the way a client would, and print their addresses')
      .option('--strategy <name>', 'round-robin, random, weighted, least-outstanding, p2c, consistent-hash, zone-aware', 'round-robin')
      .option('--key <key>', 'sticky key for consistent-hash')
      .option('--zone <zone>', 'local zone for zone-aware')
      .option('-n <count>', 'how many picks', '1'),
  ).action(async (service: string, opts: { strategy: string; key?: string; zone?: string; n: string; layout?: string; root?: string }) => {
    validateServiceName(service);
    const n = parsePositiveInt(opts.n, 'n', 1, 1_000_000);
    if (opts.strategy === 'consistent-hash' && opts.key === undefined) {
      throw new InvalidArgumentError('--strategy consistent-hash needs --key');
    }
    const backend = await getBackend();
    // A one-shot read: an unreachable registry is an error now, not a wait.
    const cache = new ServiceCache(backend, service, { layout: layoutFrom(opts) });
    try {
      await cache.ready({ failFast: true });
      const picker = makeStrategy(opts.strategy, opts.zone ? { zone: opts.zone } : {}).build(cache.instances);
      for (let i = 0; i < n; i++) {
        const p = picker.pick(opts.key);
        out(instanceEndpoint(p.instance));
        p.done();
      }
    } finally {
      await cache.close();
    }
  });
}
