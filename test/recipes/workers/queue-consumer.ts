/**
 * A consumer of the queue check (queue-process.test.ts): take, print {"ev":"got"} (stdout is a pipe,
 * written synchronously, so a line printed before a SIGKILL is not lost), ack, repeat, with a few
 * takes in parallel. A lost session (possible under load with a 1 s TTL) is replaced by a new one,
 * as a real consumer would. SIGTERM stops it. Config in ROSTER_WORKER (JSON).
 */
import { openBackend } from '../../../src/index.js';
import { Queue } from '../../../src/recipes/index.js';

const cfg = JSON.parse(process.env.ROSTER_WORKER ?? '{}') as { backend: string; name: string; ttl: number; id: string; parallel: number };
const out = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify({ id: cfg.id, pid: process.pid, t: Date.now(), ...o }) + '\n');
const backend = await openBackend(cfg.backend);
const stop = new AbortController();
process.once('SIGTERM', () => stop.abort(new Error('SIGTERM')));
out({ ev: 'ready' });
while (!stop.signal.aborted) {
  const session = await backend.session({ ttl: cfg.ttl });
  const q = new Queue(backend, session, cfg.name);
  await Promise.all(
    Array.from({ length: cfg.parallel }, async () => {
      while (!stop.signal.aborted && !session.signal.aborted) {
        try {
          const item = await q.take({ signal: stop.signal });
          out({ ev: 'got', value: item.value });
          await item.ack();
        } catch (e) {
          if (stop.signal.aborted) return;
          out({ ev: 'error', error: String(e) });
        }
      }
    }),
  );
  await q.close();
  await session.close();
}
await backend.close();
out({ ev: 'exit' });
