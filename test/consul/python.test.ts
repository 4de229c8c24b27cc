/**
 * Debian's Python Consul clients against roster server's /v1 API, each against a fresh server:
 * python3-consul2 (installed as a package) and python3-consul 0.7 (conflicts with it as a package:
 * unpacked by scripts/setup.sh (npm test's pretest, .ci/run) into .cache/consul-clients and used through
 * PYTHONPATH; it still sends GET for deregistration and TTL updates). Both run
 * test/consul/python/client.py; the endpoints each called are printed.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { startConsulServer } from './helpers.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const script = join(root, 'test/consul/python/client.py');
const PYTHON = '/usr/bin/python3'; // Debian's interpreter: the one its python3-* packages install into

const clients = [
  { name: 'python3-consul2', dir: '/usr/lib/python3/dist-packages', marker: '/usr/lib/python3/dist-packages/consul/base.py' },
  {
    name: 'python3-consul',
    dir: join(root, '.cache/consul-clients/python3-consul/usr/lib/python3/dist-packages'),
    marker: join(root, '.cache/consul-clients/python3-consul/usr/lib/python3/dist-packages/consul/base.py'),
  },
];

function run(dir: string, port: number): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(PYTHON, [script, String(port), dir], { env: { ...process.env, PYTHONPATH: dir }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr });
    });
  });
}

describe('Python Consul clients', () => {
  for (const c of clients) {
    it(`${c.name} registers, discovers, blocks, uses KV and sessions`, async () => {
      if (!existsSync(PYTHON) || !existsSync(c.marker)) {
        throw new Error(`${c.name} is not installed (${c.marker} missing): run scripts/setup.sh (npm test does)`);
      }
      const srv = await startConsulServer();
      try {
        const r = await run(c.dir, srv.port);
        if (r.code !== 0) throw new Error(`${c.name} failed (exit ${r.code}):\n${r.stderr || r.stdout}`);
        const out = JSON.parse(r.stdout.trim().split('\n').pop()!) as { ok: boolean; module: string };
        expect(out.ok).toBe(true);
        expect(out.module.startsWith(c.dir)).toBe(true);
        console.info(`${c.name} called:\n  ${srv.endpoints().join('\n  ')}`);
      } finally {
        await srv.cleanup();
      }
    }, 60_000);
  }
});
