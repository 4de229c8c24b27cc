/**
 * Output to a closed pipe ends quietly: `roster kv ls | head -1` and `roster pick -n ... | head -1`
 * print one line, and roster exits 0 with nothing on stderr (no EPIPE stack trace), whether or not
 * its writes outlast the reader (a small output fits the pipe's buffer; a large one cannot).
 */
import { spawn } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBackend } from '../../src/index.js';
import type { Backend } from '../../src/contract/types.js';
import { startInProcess, type InProcessServer } from '../helpers/server.js';
import { BIN, cliEnv, Proc, requireBuilt } from '../helpers/cli.js';

/** `roster <args> 2>stderr | head -1` in bash; roster's own exit status from PIPESTATUS. */
function pipeToHead(args: string[]): Promise<{ head: string; stderr: string; status: number; ms: number }> {
  const quoted = [process.execPath, BIN, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const script = `err=$(mktemp); ${quoted} 2>"$err" | head -1; s=\${PIPESTATUS[0]}; echo "STATUS $s"; echo "STDERR $(cat "$err")"; rm -f "$err"`;
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    const c = spawn('bash', ['-c', script], { env: cliEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout.on('data', (d: Buffer) => (out += d.toString()));
    c.on('error', reject);
    c.on('close', () => {
      const lines = out.split('\n');
      const status = Number(/^STATUS (\d+)$/m.exec(out)?.[1]);
      const stderr = out.slice(out.indexOf('STDERR ') + 7).trim();
      resolve({ head: lines[0]!, stderr, status, ms: performance.now() - t0 });
    });
  });
}

describe('EPIPE: roster ... | head -1', () => {
  let srv: InProcessServer;
  let b: Backend;
  const procs: Proc[] = [];
  beforeAll(async () => {
    requireBuilt();
    srv = await startInProcess();
    b = await openBackend(srv.url);
    // ~300 KiB of listing: far more than a pipe buffer (64 KiB).
    await Promise.all(Array.from({ length: 3000 }, (_, i) => b.put(`bulk/key-${String(i).padStart(5, '0')}`, 'v'.repeat(80))));
    const reg = new Proc(['--backend', srv.url, 'register', 'orders', '127.0.0.1:9001', '--ttl', '5s']);
    procs.push(reg);
    await reg.waitLine((l) => l.startsWith('registered'));
  }, 60_000);
  afterAll(async () => {
    for (const p of procs) p.child.kill('SIGKILL');
    await b?.close();
    await srv?.cleanup();
  });

  it('kv ls | head -1', async () => {
    const r = await pipeToHead(['--backend', srv.url, 'kv', 'ls', 'bulk/']);
    expect(r.head).toBe(`bulk/key-00000\t${'v'.repeat(80)}`);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  }, 30_000);

  it('pick -n 1000 | head -1, and -n 200000 (far past the pipe buffer)', async () => {
    for (const n of ['1000', '200000']) {
      const r = await pipeToHead(['--backend', srv.url, 'pick', 'orders', '-n', n]);
      expect(r.head).toBe('127.0.0.1:9001');
      expect(r.stderr, `-n ${n}`).toBe('');
      expect(r.status, `-n ${n}`).toBe(0);
    }
  }, 30_000);

  it('watch | head -1 ends the watch at its next line', async () => {
    const r = await pipeToHead(['--backend', srv.url, 'kv', 'watch', 'bulk/']);
    expect(r.head).toMatch(/PUT {5}bulk\/key-00000 /);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  }, 30_000);
});
