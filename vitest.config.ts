import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 30_000,
    hookTimeout: 60_000,
    // Real servers (etcd, ZooKeeper, roster) are started per file on free ports; two cores, so
    // keep file parallelism modest to avoid timing-sensitive tests starving each other.
    maxWorkers: 2,
    pool: 'forks',
  },
});
