// The registered process of the failure-detection scenario (bench/worker.mjs `failure`): it
// registers one instance through roster's Registrar and keeps it alive until it is killed. SIGKILL
// leaves the session to expire; SIGTERM deregisters (Registrar.close) and exits.
// Config comes as JSON in $VICTIM: { url, options, ttl, service, id }.
import path from 'node:path';
import process from 'node:process';
import { setInterval, clearInterval } from 'node:timers';
import { pathToFileURL, fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const DIST = process.env.ROSTER_DIST ?? path.join(here, '..', 'dist');
const { openBackend, Registrar } = await import(pathToFileURL(path.join(DIST, 'index.js')).href);

const cfg = JSON.parse(process.env.VICTIM ?? '{}');
const backend = await openBackend(cfg.url, cfg.options ?? {});
const registrar = new Registrar(backend, { ttl: cfg.ttl, repair: false });
await registrar.register({ service: cfg.service, id: cfg.id, address: '127.0.0.1', port: 9000 + (process.pid % 1000) });
// Keep the process alive (the session's keepalive timer is unref'd by design).
const keep = setInterval(() => undefined, 60_000);
process.once('SIGTERM', () => {
  registrar
    .close()
    .then(() => backend.close())
    .then(
      () => process.exit(0),
      (e) => {
        process.stderr.write(`victim: close failed: ${e?.message ?? e}\n`);
        process.exit(1);
      },
    )
    .finally(() => clearInterval(keep));
});
