/**
 * One contender of the lock safety check (lock-safety.test.ts), run as its own process:
 *   node --import test/helpers/ts-register.mjs lock-worker.ts
 * Config in ROSTER_WORKER (JSON): backend URL, resource URL, lock name, session TTL.
 * Forever (until SIGTERM): take the lock, then write begin / middle / end to the shared resource
 * with the fencing token, pausing between writes; checking lock.signal before each write as a
 * careful client does. SIGSTOP can still land between the check and the write, which is exactly
 * what fencing exists for. Prints one JSON line per event on stdout.
 */
import { openBackend } from '../../../src/index.js';
import type { Session } from '../../../src/contract/types.js';
import { lock } from '../../../src/recipes/index.js';

const cfg = JSON.parse(process.env.ROSTER_WORKER ?? '{}') as { backend: string; resource: string; name: string; ttl: number; id: string };
const log = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify({ id: cfg.id, pid: process.pid, t: Date.now(), ...o }) + '\n');
const backend = await openBackend(cfg.backend);
let stopping = false;
process.once('SIGTERM', () => {
  stopping = true;
});

async function write(token: number, phase: string): Promise<boolean> {
  const res = await fetch(cfg.resource, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ id: cfg.id, pid: process.pid, token, phase }),
  });
  await res.arrayBuffer();
  return res.status === 200;
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));
let session: Session | undefined;
while (!stopping) {
  try {
    if (!session || session.signal.aborted) session = await backend.session({ ttl: cfg.ttl });
    const l = await lock(backend, session, cfg.name);
    log({ ev: 'acquired', token: l.token });
    let ok = true;
    for (const phase of ['begin', 'middle', 'end']) {
      if (l.signal.aborted) {
        ok = false;
        break;
      }
      const accepted = await write(l.token, phase);
      if (!accepted) {
        log({ ev: 'rejected', token: l.token, phase });
        ok = false;
        break;
      }
      await pause(30 + Math.random() * 40);
    }
    log({ ev: ok ? 'released' : 'lost', token: l.token, reason: l.signal.aborted ? String(l.signal.reason) : undefined });
    await l.unlock();
    await pause(Math.random() * 20);
  } catch (e) {
    log({ ev: 'error', error: String(e) });
    await pause(50);
  }
}
await session?.close().catch(() => undefined);
await backend.close();
log({ ev: 'exit' });
