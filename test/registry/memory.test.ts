import { afterAll, beforeAll, describe } from 'vitest';
import { memoryFixture, type MemoryFixture } from '../../src/testing/fixtures.js';
import { registrySuite } from './suite.js';

describe('registry on memory://', () => {
  let fx: MemoryFixture;
  beforeAll(async () => {
    fx = await memoryFixture(`registry-${process.pid}`);
  });
  afterAll(async () => {
    await fx?.close();
  });
  registrySuite(() => ({
    open: () => fx.open(),
    ttl: 600,
    revoke: (id) => fx.revoke(id),
  }));
});
