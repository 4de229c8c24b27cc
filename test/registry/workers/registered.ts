/**
 * A process whose only job is to stay registered: one backend, one Registrar, nothing else on its
 * event loop (no server, no interval). Run as
 *   node --import ./test/helpers/ts-register.mjs test/registry/workers/registered.ts
 * with ROSTER_TEST_REGISTERED = JSON { backend, service, id, ttl, keepProcessAlive? }.
 * stdout lines: REGISTERED, LOST, RESTORED, RETRY <op> (a failed background attempt), DRAINING.
 * SIGTERM drains through roster-sd/process (deregister, then exit 0).
 */
import { openBackend } from '../../../src/index.js';
import { Registrar } from '../../../src/registry/index.js';
import { drainOnSignals } from '../../../src/integrations/process.js';

const cfg = JSON.parse(process.env.ROSTER_TEST_REGISTERED ?? '{}') as { backend: string; service: string; id: string; ttl: number; keepProcessAlive?: boolean };
const out = (line: string) => process.stdout.write(`${line}\n`);
const keep = cfg.keepProcessAlive === undefined ? {} : { keepProcessAlive: cfg.keepProcessAlive };

const backend = await openBackend(cfg.backend, { ...keep, ...(cfg.backend.startsWith('http') ? { reconnectBaseMs: 50, reconnectCapMs: 200 } : {}) });
const registrar = new Registrar(backend, { ttl: cfg.ttl, retry: { baseMs: 50, capMs: 200 }, ...keep });
registrar.on('lost', () => out('LOST'));
registrar.on('restored', () => out('RESTORED'));
registrar.on('error', (e) => out(`RETRY ${e.op}`));
drainOnSignals(registrar, { drainMs: 0, onDrain: () => out('DRAINING'), exit: (code) => void backend.close().finally(() => process.exit(code)) });
await registrar.register({ service: cfg.service, id: cfg.id, address: '127.0.0.1', port: 9000 });
out('REGISTERED');
