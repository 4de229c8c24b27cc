/**
 * The two commands' machinery: scripts/setup.sh (the one setup step of pretest and .ci/run) passes
 * quickly when everything is installed and, when it cannot install (not root), stops at once with
 * one line naming the missing packages and the command that installs them; scripts/ensure-built.mjs
 * (`npm start`, `npm run example`) builds when dist/ is missing or older than the sources, and
 * only then.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, mkdtemp, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const exec = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));
const settle = (p: Promise<{ stdout: string; stderr: string }>) =>
  p.then(
    (r) => ({ code: 0, stdout: r.stdout, stderr: r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, stdout: e.stdout, stderr: e.stderr }),
  );

describe('scripts/setup.sh', () => {
  let fakebin: string;
  beforeAll(async () => {
    fakebin = await mkdtemp(join(tmpdir(), 'roster-fakebin-'));
    await chmod(fakebin, 0o755); // readable by the unprivileged user the script runs as
    // A PATH with only what the script itself needs: every package it checks for is "missing".
    for (const c of ['dirname', 'id', 'dpkg', 'python3', 'ls', 'mkdir', 'head', 'rm']) {
      const real = (await exec('bash', ['-c', `command -v ${c}`])).stdout.trim();
      await symlink(real, join(fakebin, c));
    }
  });
  afterAll(async () => {
    await rm(fakebin, { recursive: true, force: true });
  });

  it('passes (exit 0, silent) on this machine, where npm test ran it', async () => {
    const t0 = performance.now();
    const r = await settle(exec('bash', [join(root, 'scripts/setup.sh')], { cwd: root }));
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout + r.stderr).toBe('');
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it.runIf(existsSync('/usr/bin/setpriv') && process.getuid?.() === 0)('not root, packages missing: one line with the packages and the install command, exit 1', async () => {
    const r = await settle(exec('setpriv', ['--reuid', '65534', '--regid', '65534', '--clear-groups', 'env', `PATH=${fakebin}`, '/bin/bash', join(root, 'scripts/setup.sh')], { cwd: root }));
    expect(r.code).toBe(1);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^roster setup: missing system packages: etcd-server etcd-client .*zsh fish; install them with: sudo apt-get install -y --no-install-recommends etcd-server etcd-client .* \(or set ROSTER_SKIP_SETUP=1 to skip this check\)$/);
    for (const pkg of ['chromium', 'dnsutils', 'prometheus', 'golang-go', 'default-jdk-headless']) expect(lines[0]).toContain(pkg);
  });
});

describe('scripts/ensure-built.mjs', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'roster-build-'));
    await mkdir(join(dir, 'src'));
    await mkdir(join(dir, 'scripts'));
    await copyFile(join(root, 'scripts/ensure-built.mjs'), join(dir, 'scripts/ensure-built.mjs'));
    await symlink(join(root, 'node_modules'), join(dir, 'node_modules'));
    await writeFile(join(dir, 'package.json'), JSON.stringify({ name: 'x', private: true, type: 'module' }));
    await writeFile(join(dir, 'tsconfig.json'), '{}');
    await writeFile(join(dir, 'tsconfig.build.json'), JSON.stringify({ compilerOptions: { outDir: 'dist', rootDir: 'src', module: 'NodeNext', target: 'ES2022', lib: ['ES2022'], types: [], skipLibCheck: true }, include: ['src'] }));
    await writeFile(join(dir, 'src/a.ts'), 'export const a: number = 1;\n');
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const ensure = () => settle(exec(process.execPath, ['scripts/ensure-built.mjs'], { cwd: dir }));

  it('builds a missing dist/, skips a fresh one, rebuilds after a source changes', async () => {
    const first = await ensure();
    expect(first.code, first.stderr).toBe(0);
    expect(first.stderr).toContain('roster: building (dist/ has not been built)');
    expect(existsSync(join(dir, 'dist/a.js'))).toBe(true);
    const second = await ensure();
    expect(second.stderr).toBe('');
    const later = new Date(Date.now() + 5000);
    await writeFile(join(dir, 'src/a.ts'), 'export const a: number = 2;\n');
    await utimes(join(dir, 'src/a.ts'), later, later);
    const third = await ensure();
    expect(third.stderr).toContain('roster: building (sources changed since the last build)');
    expect((await exec(process.execPath, ['-e', 'import("./dist/a.js").then((m) => console.log(m.a))'], { cwd: dir })).stdout.trim()).toBe('2');
  }, 60_000);
});
