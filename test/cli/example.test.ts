/**
 * `npm run example` (scripts/example.mjs) runs the README's TypeScript example (examples/quickstart.ts)
 * on Node 20 in one command: against a server it starts itself, or the one $ROSTER_BACKEND names.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInProcess, type InProcessServer } from '../helpers/server.js';
import { cliEnv } from '../helpers/cli.js';

const root = fileURLToPath(new URL('../../', import.meta.url));
const TOKEN = 'readme-example-bootstrap-token-0123456789';

function example(env: Record<string, string>): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, ['scripts/example.mjs'], { cwd: root, env: cliEnv(env), stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, stdout, stderr })));
}

describe('npm run example', () => {
  let srv: InProcessServer;
  beforeAll(async () => {
    // As the README runs it: against a server with tokens on, the token in ROSTER_TOKEN.
    srv = await startInProcess({ auth: { bootstrapToken: TOKEN, audit: false } });
  });
  afterAll(async () => {
    await srv?.cleanup();
  });

  it('with $ROSTER_BACKEND and $ROSTER_TOKEN: registers, discovers, picks, locks, and leaves nothing registered', async () => {
    const r = await example({ ROSTER_BACKEND: srv.url, ROSTER_TOKEN: TOKEN });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/holding the lock with fencing token \d+/);
    const res = await fetch(`${srv.url}/api/v1/keys?prefix=services/`, { headers: { authorization: `Bearer ${TOKEN}` } });
    expect(((await res.json()) as { items: unknown[] }).items).toEqual([]);
  }, 60_000);

  it('alone: starts its own server and runs to completion', async () => {
    const r = await example({});
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/^roster: example server on http:\/\/127\.0\.0\.1:\d+$/m);
    expect(r.stdout).toMatch(/holding the lock with fencing token \d+/);
  }, 60_000);
});
