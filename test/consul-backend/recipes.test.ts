/**
 * The recipes suite (lock with fencing tokens, election, queue, barrier, semaphore, config watch) on
 * consul:// against roster server's /v1 (session TTL floor lowered so 1 s sessions are 500 ms Consul
 * TTLs).
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { ConsulBackend } from '../../src/backends/consul/index.js';
import { recipesSuite } from '../recipes/suite.js';
import { startConsulServer, type ConsulTestServer } from '../consul/helpers.js';

let srv: ConsulTestServer;
beforeAll(async () => {
  srv = await startConsulServer({ consul: { sessionTtlMin: '250ms' } });
});
afterAll(async () => {
  await srv?.cleanup();
});

describe('recipes on consul://', () => {
  recipesSuite(() => ({ open: () => ConsulBackend.open(`consul://127.0.0.1:${srv.port}/recipes`), ttl: 1000 }));
});
