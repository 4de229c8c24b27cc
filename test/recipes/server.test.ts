import { afterAll, beforeAll, describe } from 'vitest';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { startInProcess, type InProcessServer } from '../helpers/server.js';
import { recipesSuite } from './suite.js';

describe('recipes on the roster server (http://)', () => {
  let srv: InProcessServer;
  beforeAll(async () => {
    srv = await startInProcess();
  });
  afterAll(async () => {
    await srv?.cleanup();
  });
  recipesSuite(() => ({ open: () => RemoteBackend.open(srv.url), ttl: 1000 }));
});
