import { describe } from 'vitest';
import { MemoryBackend } from '../../src/backends/memory/index.js';
import { engineOf } from '../../src/backends/memory/backend.js';
import { conformance } from '../conformance/suite.js';

describe('memory:// conformance', () => {
  const name = `conf-${process.pid}`;
  conformance(() => ({
    open: () => MemoryBackend.open(`memory://${name}`),
    ttl: 600,
    compact: async () => {
      const b = await MemoryBackend.open(`memory://${name}`);
      engineOf(b).compact();
      await b.close();
    },
  }));
});
