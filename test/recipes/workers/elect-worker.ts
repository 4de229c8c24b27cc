/**
 * One candidate of the election check (election-process.test.ts): campaigns with its id as value,
 * prints {"ev":"elected"} when it becomes leader, {"ev":"lost"} if leadership is lost, and resigns
 * on SIGTERM. Config in ROSTER_WORKER (JSON): backend URL, election name, session TTL.
 */
import { openBackend } from '../../../src/index.js';
import { Election } from '../../../src/recipes/index.js';

const cfg = JSON.parse(process.env.ROSTER_WORKER ?? '{}') as { backend: string; name: string; ttl: number; id: string };
const log = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify({ id: cfg.id, pid: process.pid, t: Date.now(), ...o }) + '\n');
const backend = await openBackend(cfg.backend);
const session = await backend.session({ ttl: cfg.ttl });
const election = new Election(backend, session, cfg.name);
const stop = new AbortController();
process.once('SIGTERM', () => stop.abort(new Error('SIGTERM')));
log({ ev: 'campaigning', key: election.key });
try {
  await election.campaign(cfg.id, { signal: stop.signal });
  log({ ev: 'elected', term: election.term });
  await new Promise<void>((resolve) => {
    election.signal!.addEventListener('abort', () => resolve(), { once: true });
    stop.signal.addEventListener('abort', () => resolve(), { once: true });
  });
  if (!stop.signal.aborted) log({ ev: 'lost', reason: String(election.signal!.reason) });
} catch (e) {
  if (!stop.signal.aborted) log({ ev: 'error', error: String(e) });
}
await election.resign();
await session.close();
await backend.close();
log({ ev: 'exit' });
