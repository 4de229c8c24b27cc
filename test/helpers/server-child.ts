/**
 * A roster server in its own process, so tests can SIGKILL it. Started by test/helpers/server.ts as
 *   node --import ./test/helpers/ts-register.mjs test/helpers/server-child.ts
 * Options come as JSON in ROSTER_TEST_SERVER (port, dataDir, ...). Prints one line
 * `LISTENING <url>` on stdout once it serves; SIGTERM closes it gracefully.
 */
import { startServer, type ServerOptions } from '../../src/server/index.js';

const opts = JSON.parse(process.env.ROSTER_TEST_SERVER ?? '{}') as ServerOptions;
const server = await startServer(opts);
process.stdout.write(`LISTENING ${server.url}\n`);
const stop = () => {
  server.close().then(
    () => process.exit(0),
    (e: unknown) => {
      process.stderr.write(`close failed: ${String(e)}\n`);
      process.exit(1);
    },
  );
};
process.once('SIGTERM', stop);
process.once('SIGINT', stop);
