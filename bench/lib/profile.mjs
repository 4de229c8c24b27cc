// Summarise a V8 CPU profile (node --cpu-prof): self time per function and per area, so the
// report can say where the server's time goes. Sampled time only: syscalls show up under the
// JavaScript function that called into the binding (e.g. writev under writevGeneric), and time
// outside JavaScript under "(program)" / "(garbage collector)".
import { readFileSync } from 'node:fs';

/** Which area a function belongs to, judged by its script URL. */
function area(url, name) {
  if (name === '(garbage collector)') return 'GC';
  if (name === '(program)') return 'native / outside JS';
  if (name === '(idle)') return 'idle';
  if (url === '' && name) return name.startsWith('(') ? 'native / outside JS' : 'V8 builtins';
  if (/node:internal\/(modules|bootstrap)|node:internal\/vm/.test(url) || /^compile/.test(name)) return 'startup (module loading)';
  if (/node:_http_|node:http$/.test(url)) return 'node:http';
  if (/node:(net|stream|internal\/stream|internal\/streams|_stream|internal\/net|internal\/stream_base_commons)/.test(url)) return 'net / streams';
  if (/node:(internal\/)?(timers|process|async_hooks|internal\/process|events|internal\/async_hooks)/.test(url)) return 'event loop / timers / promises';
  if (/node:(fs|internal\/fs)/.test(url)) return 'fs (WAL writes)';
  if (/\/server\//.test(url)) return 'roster server';
  if (/\/engine\/wal/.test(url)) return 'roster WAL';
  if (/\/engine\//.test(url)) return 'roster engine';
  if (/\/core\//.test(url)) return 'roster core (validation)';
  if (url.startsWith('node:')) return 'node other';
  return 'other';
}

export function summarizeProfile(file, top = 20) {
  const prof = JSON.parse(readFileSync(file, 'utf8'));
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const self = new Map();
  const dt = prof.timeDeltas;
  // Each sample's time is the delta to the next sample.
  for (let i = 0; i < prof.samples.length; i++) {
    const n = byId.get(prof.samples[i]);
    const d = dt[i + 1] ?? 0;
    self.set(n.id, (self.get(n.id) ?? 0) + d);
  }
  const fns = new Map();
  const areas = new Map();
  let total = 0;
  let idle = 0;
  for (const [id, us] of self) {
    const { callFrame: cf } = byId.get(id);
    const name = cf.functionName || '(anonymous)';
    const a = area(cf.url, cf.functionName);
    if (a === 'idle') {
      idle += us;
      continue;
    }
    total += us;
    const short = cf.url.replace(/^file:\/\/.*\/dist\//, 'dist/');
    const key = `${name} ${short}${cf.url ? `:${cf.lineNumber + 1}` : ''}`;
    fns.set(key, (fns.get(key) ?? 0) + us);
    areas.set(a, (areas.get(a) ?? 0) + us);
  }
  const sorted = (m) => [...m].sort((a, b) => b[1] - a[1]);
  return {
    busyMs: total / 1000,
    idleMs: idle / 1000,
    areas: sorted(areas).map(([name, us]) => ({ name, ms: us / 1000, pct: (us / total) * 100 })),
    functions: sorted(fns)
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: us / 1000, pct: (us / total) * 100 })),
  };
}
