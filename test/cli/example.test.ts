/** Runs the README's TypeScript example (examples/quickstart.ts) against a real server. */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInProcess, type InProcessServer } from '../helpers/server.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const TOKEN = 'readme-example-bootstrap-token-0123456789';

describe('README example', () => {
  let srv: InProcessServer;
  beforeAll(async () => {
    // As the README runs it: against a server with tokens on, the token in ROSTER_TOKEN.
    srv = await startInProcess({ auth: { bootstrapToken: TOKEN, audit: false } });
  });
  afterAll(async () => {
    await srv?.cleanup();
  });

  it('runs to completion: registers, discovers, picks, locks, and leaves nothing registered', async () => {
    const child = spawn(process.execPath, ['--import', './test/helpers/ts-register.mjs', 'examples/quickstart.ts'], {
      cwd: root,
      env: { ...process.env, ROSTER_BACKEND: srv.url, ROSTER_TOKEN: TOKEN },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code, stderr).toBe(0);
    expect(stdout).toMatch(/holding the lock with fencing token \d+/);
    const res = await fetch(`${srv.url}/api/v1/keys?prefix=services/`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(((await res.json()) as { items: unknown[] }).items).toEqual([]);
  }, 60_000);
});
