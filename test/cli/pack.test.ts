/**
 * The name is ours: `npm pack` of this checkout, installed into an empty folder, gives the
 * `roster` command (`npx roster --version`) and `import ... from 'roster-sd'` from there, not the
 * unrelated npm package called `roster`. Dependencies come from npm's cache (`npm ci` filled it).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireBuilt, cliEnv } from '../helpers/cli.js';

const exec = promisify(execFile);
const root = fileURLToPath(new URL('../../', import.meta.url));

describe('npm pack → install into an empty folder → npx roster', () => {
  let dir: string;
  beforeAll(async () => {
    requireBuilt();
    dir = await mkdtemp(join(tmpdir(), 'roster-pack-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('installs roster-sd with the roster command and the package imports', async () => {
    const env = cliEnv({ npm_config_audit: 'false', npm_config_fund: 'false', npm_config_update_notifier: 'false' });
    // dist/ is fresh (pretest built it): pack without running `prepare` again.
    await exec('npm', ['pack', '--ignore-scripts', '--silent', '--pack-destination', dir], { cwd: root, env });
    const tarballs = (await readdir(dir)).filter((f) => f.endsWith('.tgz'));
    expect(tarballs).toEqual([expect.stringMatching(/^roster-sd-\d+\.\d+\.\d+\.tgz$/)]);
    const app = join(dir, 'app');
    await exec('mkdir', ['-p', app]);
    await writeFile(join(app, 'package.json'), JSON.stringify({ name: 'empty-app', private: true, type: 'module' }));
    await exec('npm', ['install', '--prefer-offline', '--no-audit', '--no-fund', join(dir, tarballs[0]!)], { cwd: app, env, timeout: 180_000 });
    const v = await exec('npx', ['--no-install', 'roster', '--version'], { cwd: app, env });
    expect(v.stdout).toMatch(/^roster \d+\.\d+\.\d+ \(roster-sd, node v\d+/);
    const help = await exec('npx', ['--no-install', 'roster', 'kv', '--help'], { cwd: app, env });
    expect(help.stdout).toMatch(/Usage: roster kv/);
    // The library from the installed package: open memory://, register, read back.
    const script = [
      "import { openBackend, Registrar, ServiceCache } from 'roster-sd';",
      "const b = await openBackend('memory://pack');",
      "const r = new Registrar(b, { ttl: '10s' });",
      "await r.register({ service: 'orders', address: '127.0.0.1', port: 9001 });",
      "const c = await ServiceCache.open(b, 'orders');",
      'console.log(c.instances.map((i) => i.id).join(","));',
      'await c.close(); await r.close(); await b.close();',
    ].join('\n');
    await writeFile(join(app, 'check.mjs'), script);
    const lib = await exec(process.execPath, ['check.mjs'], { cwd: app, env });
    expect(lib.stdout.trim()).toBe('127.0.0.1:9001');
  }, 240_000);
});
