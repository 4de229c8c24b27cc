/**
 * The layer check (scripts/layers.mjs, run by `npm run lint`): green on src/, and it fails — naming
 * the file — when an arrow points up, when sibling packages import each other, or on a cycle.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';

const SCRIPT = fileURLToPath(new URL('../../scripts/layers.mjs', import.meta.url));
const run = (dir?: string) =>
  promisify(execFile)(process.execPath, [SCRIPT, ...(dir ? [dir] : [])]).then(
    (r) => ({ code: 0, out: r.stdout + r.stderr }),
    (e: { code: number; stdout: string; stderr: string }) => ({ code: e.code, out: e.stdout + e.stderr }),
  );

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

async function tree(files: Record<string, string>): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'layers-'));
  dirs.push(root);
  for (const [rel, text] of Object.entries(files)) {
    await mkdir(dirname(join(root, rel)), { recursive: true });
    await writeFile(join(root, rel), text);
  }
  return root;
}

describe('layer check', () => {
  it('passes on src/', async () => {
    const r = await run();
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/arrows point down, no cycles/);
  });

  it('fails on an arrow pointing up, a sibling import, an unknown directory and a cycle', async () => {
    const root = await tree({
      'core/a.ts': "import { x } from '../contract/types.js';\nexport const a = x;\n",
      'contract/types.ts': 'export const x = 1;\n',
      'backends/etcd/index.ts': "import type { Z } from '../zookeeper/index.js';\nexport type E = Z;\n",
      'backends/zookeeper/index.ts': 'export type Z = 1;\n',
      'backends/builtin.ts': "import './etcd/index.js';\nimport './zookeeper/index.js';\n",
      'stray/x.ts': 'export {};\n',
      'registry/p.ts': "export { q } from './q.js';\nexport const p = 1;\n",
      'registry/q.ts': "import { p } from './p.js';\nexport const q = () => import('./p.js').then(() => p);\n",
    });
    const r = await run(root);
    expect(r.code).toBe(1);
    expect(r.out).toContain('core/a.ts (core) imports contract/types.ts (contract): an arrow pointing up');
    expect(r.out).toContain('backends/etcd/index.ts (backends/etcd) imports backends/zookeeper/index.ts (backends/zookeeper): sibling packages');
    expect(r.out).not.toContain('backends/builtin.ts');
    expect(r.out).toContain('stray/x.ts: not in any layer');
    expect(r.out).toMatch(/import cycle: registry\/(p|q)\.ts -> registry\/(q|p)\.ts -> registry\/(p|q)\.ts/);
  });
});
