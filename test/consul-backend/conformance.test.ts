/**
 * The backend conformance suite on consul:// against roster server's Consul-compatible /v1 (no
 * real Consul server exists on this machine; docs/consul.md says which behaviours were checked only
 * this way). The server runs in a child process so `restart` is a real kill -9; its session TTL
 * floor (Consul's `session_ttl_min`) is lowered so the suite's 1 s sessions are 500 ms Consul TTLs.
 * Consul keeps no per-key write counter and no history, so the target declares `versions:
 * 'modRevision'` and `watchHistory: 'final-state'` (see src/testing/conformance.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ConsulBackend } from '../../src/backends/consul/index.js';
import { conformance } from '../../src/testing/conformance.js';
import { ServerProcess } from '../helpers/server.js';

let proc: ServerProcess;
beforeAll(async () => {
  proc = await ServerProcess.start({ options: { consul: { sessionTtlMin: '250ms' } } });
});
afterAll(async () => {
  await proc?.cleanup();
});

describe('consul:// conformance (against roster server /v1)', () => {
  conformance({ describe, it, expect, beforeAll, afterAll }, {
    open: () => ConsulBackend.open(`consul://127.0.0.1:${proc.port}/conformance`, { reconnectBaseMs: 50, reconnectCapMs: 500 }),
    ttl: 1000,
    restart: () => proc.restart(),
    versions: 'modRevision',
    watchHistory: 'final-state',
  });
});
