/**
 * The registry suite over roster's own server (http://) running in a child process, so the restart
 * test is a real kill -9. Sessions are revoked behind their owner's back with the HTTP API
 * (DELETE /api/v1/sessions/<id>), as an operator would.
 */
import { afterAll, beforeAll, describe } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { ServerProcess } from '../helpers/server.js';
import { registrySuite } from './suite.js';

let srv: ServerProcess;
beforeAll(async () => {
  srv = await ServerProcess.start();
});
afterAll(async () => {
  await srv?.cleanup();
});

describe('registry on http:// (roster server in a child process)', () => {
  registrySuite(() => ({
    open: () => RemoteBackend.open(srv.url),
    ttl: 1000,
    revoke: async (id) => {
      const res = await fetch(`${srv.url}/api/v1/sessions/${encodeURIComponent(id)}`, { method: 'DELETE', headers: { 'x-roster-request': '1' } });
      if (!res.ok) throw new Error(`revoke ${id}: HTTP ${res.status} ${await res.text()}`);
    },
    restart: () => srv.restart(),
  }));
});
