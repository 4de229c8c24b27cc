/**
 * The README's TypeScript example. It is typechecked and linted with the rest of the code, and
 * test/cli/example.test.ts runs it (`npm run example`, which starts a server unless $ROSTER_BACKEND
 * names one), so the README cannot drift from the API. Its instance id and port (example-1,
 * 9201) are not the README tour's (9001, 9002), so both can run side by side.
 */
import { lock, openBackend, Registrar, ServiceCache, strategy, watchConfig } from 'roster-sd';
import { drainOnSignals } from 'roster-sd/process';

// ROSTER_TOKEN: a token for a server with auth on (`roster server`'s default; docs/security.md).
const backend = await openBackend(process.env.ROSTER_BACKEND ?? 'http://127.0.0.1:8470', { token: process.env.ROSTER_TOKEN });

// A service registers itself; the registrar re-registers by itself after a lost lease.
const registrar = new Registrar(backend, { ttl: 10_000 });
registrar.on('lost', (e) => console.warn('registration lost, re-registering:', e.cause));
registrar.on('restored', (e) => console.info(`registered again after ${e.downtimeMs} ms`));
await registrar.register({ service: 'orders', id: 'example-1', address: '127.0.0.1', port: 9201, metadata: { version: '1.4' } });
drainOnSignals(registrar, { drainMs: 2_000 }); // on SIGTERM: deregister, let caches drop us, exit

// A client keeps a live cache (list + watch) and picks one instance per call.
const orders = await ServiceCache.open(backend, 'orders');
const picker = orders.picker(strategy('p2c'));
const { instance, done } = picker.pick(); // throws NoInstanceError when there is none
const started = performance.now();
try {
  await fetch(`http://${instance.address}:${instance.port}/health`);
  done({ latencyMs: performance.now() - started });
} catch {
  done({ error: true });
}

// Coordination: a lock with a fencing token, and a config value kept current by a watch.
const session = await backend.session({ ttl: 10_000 });
const held = await lock(backend, session, 'nightly-report');
console.log(`holding the lock with fencing token ${held.token}`);
await held.unlock();
const limits = watchConfig(backend, 'config/orders/limits', { parse: (s) => JSON.parse(s) as { rps: number } });
limits.on('change', ({ value }) => console.log('new limits', value));

await limits.close();
await orders.close();
await registrar.close();
await backend.close();
