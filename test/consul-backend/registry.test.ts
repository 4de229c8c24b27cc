/**
 * The registry suite (Registrar, ServiceCache, Discovery, call/broadcast) on consul:// with the
 * default (roster, key-value) layout, against roster server's /v1 in a child process (restart =
 * kill -9 + start). Sessions are revoked behind their owner's back with Consul's own
 * `PUT /v1/session/destroy/<id>`, as an operator would.
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { ConsulBackend } from '../../src/backends/consul/index.js';
import { registrySuite } from '../registry/suite.js';
import { ServerProcess } from '../helpers/server.js';

let proc: ServerProcess;
beforeAll(async () => {
  proc = await ServerProcess.start({ options: { consul: { sessionTtlMin: '250ms' } } });
});
afterAll(async () => {
  await proc?.cleanup();
});

describe('registry on consul://', () => {
  registrySuite(() => ({
    open: () => ConsulBackend.open(`consul://127.0.0.1:${proc.port}/registry`, { reconnectBaseMs: 50, reconnectCapMs: 500 }),
    ttl: 1000,
    revoke: async (id) => {
      const res = await fetch(`${proc.url}/v1/session/destroy/${id}`, { method: 'PUT' });
      if (res.status !== 200) throw new Error(`session destroy: HTTP ${res.status} ${await res.text()}`);
    },
    restart: () => proc.restart(),
  }));
});
