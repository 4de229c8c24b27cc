/**
 * A process that registers one instance in Consul's catalog through roster (consul:// backend,
 * consulCatalogLayout) and keeps it alive by passing its TTL check. Run as
 *   node --import ./test/helpers/ts-register.mjs test/consul-backend/workers/catalog-registrar.ts
 * with ROSTER_CATALOG_WORKER = JSON { url, service, id, ttl, deregisterAfter, port }.
 * stdout lines: REGISTERED <ms since start>, LOST, RESTORED, ERROR <op> <message>.
 */
import { ConsulBackend } from '../../../src/backends/consul/index.js';
import { Registrar } from '../../../src/registry/index.js';
import { consulCatalogLayout } from '../../../src/registry/consul-catalog.js';

const cfg = JSON.parse(process.env.ROSTER_CATALOG_WORKER ?? '{}') as { url: string; service: string; id: string; ttl: number; deregisterAfter: string; port: number };
const out = (line: string) => process.stdout.write(`${line}\n`);
const t0 = Date.now();
const backend = await ConsulBackend.open(cfg.url, { reconnectBaseMs: 50, reconnectCapMs: 500 });
const registrar = new Registrar(backend, { ttl: cfg.ttl, layout: consulCatalogLayout({ deregisterCriticalAfter: cfg.deregisterAfter }), retry: { baseMs: 50, capMs: 500 } });
registrar.on('lost', () => out('LOST'));
registrar.on('restored', () => out('RESTORED'));
registrar.on('error', (e) => out(`ERROR ${e.op} ${e.error instanceof Error ? e.error.message : String(e.error)}`));
await registrar.register({ service: cfg.service, id: cfg.id, address: '127.0.0.1', port: cfg.port, metadata: { pid: String(process.pid) } });
out(`REGISTERED ${Date.now() - t0}`);
