#!/usr/bin/env node
// The layer check run by `npm run lint` (docs/design.md, "Who may import whom"). Every import in
// src/ — static, re-export, side-effect, type-only or dynamic — must point down the layers below,
// or stay inside its own package (directory); and the import graph of src/ must have no cycle.
// Exits 1 with one line per violation.
//
//   node scripts/layers.mjs [srcDir]
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import process from 'node:process';

/** Lower number = lower layer. A module may import only from a lower layer or its own package. */
const LAYERS = [
  ['core', 0],
  ['engine', 1],
  ['contract', 2],
  ['backends', 3],
  ['balance', 4],
  ['registry', 5],
  ['recipes', 5],
  ['integrations', 6],
  ['server', 7],
  ['testing', 8],
  ['cli', 8],
  ['index.ts', 9],
  ['internal.ts', 10],
];

/** Narrower rules inside a layer: these sub-packages may not import their siblings. */
const PACKAGES_UNDER = ['backends'];
/** Files of a layer that may import every sub-package of it (the built-in scheme list). */
const AGGREGATORS = new Set(['backends/builtin.ts']);

const root = resolve(process.argv[2] ?? join(dirname(fileURLToPath(import.meta.url)), '..', 'src'));

function walk(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...walk(p));
    else if (p.endsWith('.ts') && !p.endsWith('.d.ts')) out.push(p);
  }
  return out;
}

function layerOf(rel) {
  const top = rel.split('/')[0];
  const hit = LAYERS.find(([name]) => name === top);
  return hit ? { name: top, level: hit[1] } : undefined;
}

/** The package of a file: its top directory, or `backends/<name>` under a split layer. */
function packageOf(rel) {
  const parts = rel.split('/');
  if (PACKAGES_UNDER.includes(parts[0]) && parts.length > 2) return `${parts[0]}/${parts[1]}`;
  return parts.length > 1 ? parts[0] : rel;
}

// import / export ... from '...', import '...', import('...')
const IMPORT_RE = /(?:^|[\s;])(?:import|export)\s+(?:type\s+)?(?:[^;]*?\sfrom\s*)?['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g;

const files = walk(root).map((f) => relative(root, f).split(sep).join('/'));
const fileSet = new Set(files);
const problems = [];
const graph = new Map();

for (const rel of files) {
  const text = readFileSync(join(root, rel), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/^\s*\/\/.*$/gm, '');
  const from = layerOf(rel);
  if (!from) {
    problems.push(`${rel}: not in any layer (add its directory to scripts/layers.mjs and docs/design.md)`);
    continue;
  }
  const edges = [];
  for (const m of text.matchAll(IMPORT_RE)) {
    const spec = m[1] ?? m[2];
    if (!spec.startsWith('.')) continue; // packages and node: builtins
    const target = relative(root, resolve(join(root, dirname(rel)), spec)).split(sep).join('/').replace(/\.js$/, '.ts');
    if (!fileSet.has(target)) {
      problems.push(`${rel}: imports ${spec}, which is not a source file under src/`);
      continue;
    }
    edges.push(target);
    const to = layerOf(target);
    if (!to) continue;
    const samePackage = packageOf(rel) === packageOf(target);
    if (samePackage) continue;
    if (to.level > from.level) problems.push(`${rel} (${from.name}) imports ${target} (${to.name}): an arrow pointing up`);
    else if (to.level === from.level && !(AGGREGATORS.has(rel) && to.name === from.name)) {
      problems.push(`${rel} (${packageOf(rel)}) imports ${target} (${packageOf(target)}): sibling packages of one layer do not import each other`);
    }
  }
  graph.set(rel, edges);
}

// Cycles: Tarjan's strongly connected components over the whole import graph.
let index = 0;
const stack = [];
const on = new Set();
const idx = new Map();
const low = new Map();
function strong(v) {
  idx.set(v, index);
  low.set(v, index);
  index++;
  stack.push(v);
  on.add(v);
  for (const w of graph.get(v) ?? []) {
    if (!idx.has(w)) {
      strong(w);
      low.set(v, Math.min(low.get(v), low.get(w)));
    } else if (on.has(w)) low.set(v, Math.min(low.get(v), idx.get(w)));
  }
  if (low.get(v) === idx.get(v)) {
    const comp = [];
    let w;
    do {
      w = stack.pop();
      on.delete(w);
      comp.push(w);
    } while (w !== v);
    if (comp.length > 1 || (graph.get(v) ?? []).includes(v)) problems.push(`import cycle: ${comp.reverse().join(' -> ')} -> ${comp[0]}`);
  }
}
for (const v of graph.keys()) if (!idx.has(v)) strong(v);

if (problems.length > 0) {
  for (const p of problems) process.stderr.write(`layers: ${p}\n`);
  process.stderr.write(`layers: ${problems.length} problem(s) in ${relative(process.cwd(), root) || '.'}\n`);
  process.exit(1);
}
process.stdout.write(`layers: ${files.length} files, arrows point down, no cycles\n`);
