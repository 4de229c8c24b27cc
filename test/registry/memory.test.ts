import { describe } from 'vitest';
import { MemoryBackend } from '../../src/backends/memory/index.js';
import { engineOf } from '../../src/backends/memory/backend.js';
import { registrySuite } from './suite.js';

describe('registry on memory://', () => {
  const name = `registry-${process.pid}`;
  let engineOwner: MemoryBackend | undefined;
  registrySuite(() => ({
    open: () => MemoryBackend.open(`memory://${name}`),
    ttl: 600,
    revoke: async (id) => {
      engineOwner ??= await MemoryBackend.open(`memory://${name}`);
      await engineOf(engineOwner).revoke(id);
    },
  }));
});
