/**
 * A producer of the queue check (queue-process.test.ts): puts `count` items `<id>-<n>` with a few
 * puts in flight, then prints {"ev":"done"}. Config in ROSTER_WORKER (JSON).
 */
import { openBackend } from '../../../src/index.js';
import { Queue } from '../../../src/recipes/index.js';

const cfg = JSON.parse(process.env.ROSTER_WORKER ?? '{}') as { backend: string; name: string; ttl: number; id: string; count: number; inflight: number };
const log = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify({ id: cfg.id, pid: process.pid, t: Date.now(), ...o }) + '\n');
const backend = await openBackend(cfg.backend);
const session = await backend.session({ ttl: cfg.ttl });
const q = new Queue(backend, session, cfg.name);
let next = 0;
await Promise.all(
  Array.from({ length: cfg.inflight }, async () => {
    while (next < cfg.count) {
      const n = next++;
      await q.put(`${cfg.id}-${n}`);
    }
  }),
);
log({ ev: 'done', count: cfg.count });
await q.close();
await session.close();
await backend.close();
