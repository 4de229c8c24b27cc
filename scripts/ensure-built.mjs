#!/usr/bin/env node
// dist/ up to date with src/: `npm start` and `npm run example` run this first, so a fresh clone
// (or a checkout whose sources changed since the last build) serves what its sources say.
//
//   node scripts/ensure-built.mjs           build (tsc -p tsconfig.build.json) if dist/ is missing or stale
//   node scripts/ensure-built.mjs --stamp   record that dist/ was just built (npm run build does)
//
// Stale = a file under src/, tsconfig*.json or package.json is newer than dist/.build-stamp (or
// the stamp is missing).
import { execFileSync } from 'node:child_process';
import { readdirSync, statSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import process from 'node:process';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const stamp = join(root, 'dist', '.build-stamp');

function newest(path) {
  const st = statSync(path);
  if (!st.isDirectory()) return st.mtimeMs;
  let m = 0;
  for (const name of readdirSync(path)) m = Math.max(m, newest(join(path, name)));
  return m;
}

export function isStale() {
  let built;
  try {
    built = statSync(stamp).mtimeMs;
  } catch {
    return 'dist/ has not been built';
  }
  const inputs = ['src', 'tsconfig.json', 'tsconfig.build.json', 'package.json'].map((p) => join(root, p));
  const changed = Math.max(...inputs.map(newest));
  return changed > built ? 'sources changed since the last build' : undefined;
}

export function markBuilt() {
  mkdirSync(dirname(stamp), { recursive: true });
  writeFileSync(stamp, `${new Date().toISOString()}\n`);
}

export function ensureBuilt() {
  const why = isStale();
  if (!why) return false;
  process.stderr.write(`roster: building (${why})...\n`);
  const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
  execFileSync(process.execPath, [tsc, '-p', join(root, 'tsconfig.build.json')], { stdio: 'inherit', cwd: root });
  markBuilt();
  return true;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  if (process.argv.includes('--stamp')) markBuilt();
  else ensureBuilt();
}
