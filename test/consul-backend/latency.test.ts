/**
 * Register and watch latency over the consul:// backend against roster server's /v1 (durable: every
 * write fsynced), with the shared helper the other backends use (test/helpers/latency.ts):
 * register = one /v1/txn `lock` (put bound to a session); watch = put on one client until a
 * blocking query of another client returns and its diff delivers the event.
 *   npx vitest run test/consul-backend/latency.test.ts test/backends/*-latency.test.ts
 */
import { afterAll, beforeAll, it } from 'vitest';
import { ConsulBackend } from '../../src/backends/consul/index.js';
import { startInProcess, type InProcessServer } from '../helpers/server.js';
import { measureRegisterAndWatch } from '../helpers/latency.js';

let srv: InProcessServer;
beforeAll(async () => {
  srv = await startInProcess();
});
afterAll(async () => {
  await srv?.cleanup();
});

it('register and watch latency over 1,000 operations each', () => measureRegisterAndWatch('consul:// (roster server /v1)', () => ConsulBackend.open(`consul://127.0.0.1:${new URL(srv.url).port}/bench`)), 120_000);
