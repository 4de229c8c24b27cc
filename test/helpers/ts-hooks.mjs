// Module hooks that load this repository's .ts files: `./x.js` imports resolve to `./x.ts` when
// that exists (the NodeNext convention), and .ts sources are transpiled (types stripped, no type
// check) with the repository's own TypeScript. Output is cached on disk by content hash, so a
// restarted child process starts without loading the compiler at all.
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, renameSync, writeFileSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import process from 'node:process';
import { fileURLToPath, URL } from 'node:url';

const cacheDir = join(tmpdir(), `roster-ts-cache-${process.getuid?.() ?? 0}`);
mkdirSync(cacheDir, { recursive: true });
// Bump when the transpile options below change, so stale cached output is not reused.
const CACHE_VERSION = 'v1';
let ts;

export async function resolve(specifier, context, next) {
  if (context.parentURL?.startsWith('file:') && context.parentURL.endsWith('.ts') && specifier.endsWith('.js') && (specifier.startsWith('./') || specifier.startsWith('../'))) {
    const url = new URL(specifier.slice(0, -3) + '.ts', context.parentURL);
    if (existsSync(fileURLToPath(url))) return { url: url.href, shortCircuit: true, format: 'module' };
  }
  return next(specifier, context);
}

export async function load(url, context, next) {
  if (!url.startsWith('file:') || !url.endsWith('.ts')) return next(url, context);
  const file = fileURLToPath(url);
  const source = readFileSync(file, 'utf8');
  const hash = createHash('sha1').update(CACHE_VERSION).update(file).update('\0').update(source).digest('hex');
  const cached = join(cacheDir, `${hash}.mjs`);
  try {
    return { format: 'module', source: readFileSync(cached, 'utf8'), shortCircuit: true };
  } catch {
    // not cached yet
  }
  ts ??= (await import('typescript')).default;
  const out = ts.transpileModule(source, {
    fileName: file,
    compilerOptions: {
      module: ts.ModuleKind.ESNext,
      target: ts.ScriptTarget.ES2022,
      sourceMap: false,
      inlineSourceMap: true,
      inlineSources: true,
    },
  }).outputText;
  const tmp = `${cached}.${process.pid}.tmp`;
  writeFileSync(tmp, out);
  renameSync(tmp, cached);
  return { format: 'module', source: out, shortCircuit: true };
}
