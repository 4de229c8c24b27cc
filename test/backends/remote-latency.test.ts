/**
 * Register and watch latency over the roster server (remote backend, durable: every write fsynced).
 *   npx vitest run test/backends/remote-latency.test.ts
 */
import { afterAll, beforeAll, it } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { startInProcess, type InProcessServer } from '../helpers/server.js';
import { measureRegisterAndWatch } from '../helpers/latency.js';

let srv: InProcessServer;
beforeAll(async () => {
  srv = await startInProcess();
});
afterAll(async () => {
  await srv?.cleanup();
});

it('register and watch latency over 1,000 operations each', () => measureRegisterAndWatch('roster server', () => RemoteBackend.open(srv.url)), 120_000);
