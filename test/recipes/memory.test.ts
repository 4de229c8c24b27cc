import { describe } from 'vitest';
import { MemoryBackend } from '../../src/backends/memory/index.js';
import { recipesSuite } from './suite.js';

describe('recipes on memory://', () => {
  const name = `recipes-${process.pid}`;
  recipesSuite(() => ({ open: () => MemoryBackend.open(`memory://${name}`), ttl: 600 }));
});
