#!/usr/bin/env node
// `npm run example`: the README's TypeScript example (examples/quickstart.ts) on Node 20, in one
// command. Builds dist/ if needed (the example imports the package by its name, roster-sd, which
// resolves to this checkout's dist/), starts a roster server on a free port in a temporary data
// dir unless $ROSTER_BACKEND names one, runs the example with its types stripped by the
// repository's TypeScript (Node 20 cannot run .ts itself), and stops the server.
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import process from 'node:process';
import { ensureBuilt } from './ensure-built.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
ensureBuilt();

let server;
let dataDir;
let backend = process.env.ROSTER_BACKEND;
if (!backend) {
  const { startServer } = await import(pathToFileURL(join(root, 'dist/server/index.js')).href);
  dataDir = await mkdtemp(join(tmpdir(), 'roster-example-'));
  server = await startServer({ port: 0, dataDir });
  backend = server.url;
  process.stderr.write(`roster: example server on ${backend}\n`);
}
const file = process.argv[2] ?? 'examples/quickstart.ts';
const child = spawn(process.execPath, ['--import', './test/helpers/ts-register.mjs', file], { cwd: root, stdio: 'inherit', env: { ...process.env, ROSTER_BACKEND: backend } });
const code = await new Promise((resolve) => child.on('exit', (c, sig) => resolve(c ?? (sig ? 1 : 0))));
await server?.close();
if (dataDir) await rm(dataDir, { recursive: true, force: true });
process.exit(code);
