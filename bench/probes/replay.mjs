// Replay of a large log: times loadDataDir (every record decoded, checked and applied to a fresh
// State) on a data dir of N records (default 1,000,000), made once in $DIR (default
// /tmp/roster-replay-N): puts of 20,000 keys under 1,000 sessions, and every 50th operation a
// delete with lastValue (two records, `more`). Prints one line per run (the first is a warm-up).
// Usage: node bench/probes/replay.mjs [records] [runs] [dist dir]
import { mkdir, stat, writeFile } from 'node:fs/promises';
import process from 'node:process';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const N = Number(process.argv[2] ?? 1_000_000);
const RUNS = Number(process.argv[3] ?? 5);
const DIST = resolve(process.argv[4] ?? join(dirname(fileURLToPath(import.meta.url)), '../../dist'));
const DIR = process.env.DIR ?? `/tmp/roster-replay-${N}`;
const imp = (p) => import(pathToFileURL(join(DIST, p)).href);
const { loadDataDir } = await imp('engine/recovery.js');
const { State } = await imp('engine/state.js');
const { line, FORMAT_VERSION } = await imp('engine/records.js');
const { segmentName } = await imp('engine/files.js');

const seg = join(DIR, segmentName(1));
if (!(await stat(seg).catch(() => undefined))) {
  await mkdir(DIR, { recursive: true });
  const out = [line({ t: 'segment', v: FORMAT_VERSION, first: 1 })];
  const keys = new Map();
  let s = 0;
  let r = 0;
  for (let i = 0; i < 1000 && s < N; i++) out.push(line({ t: 'grant', s: ++s, id: `sess-${i}`, ttl: 60_000 }));
  for (let i = 0; s < N; i++) {
    const j = i % 20_000;
    const k = `services/svc-${j % 97}/instance-${j}`;
    const cur = keys.get(k);
    if (cur && i % 50 === 0 && s + 2 <= N) {
      out.push(line({ t: 'put', s: ++s, r: ++r, k, v: `{"id":${i},"deregisteredAt":${i}}`, c: cur.c, n: cur.n + 1, l: cur.l, more: true }));
      out.push(line({ t: 'del', s: ++s, r: ++r, k }));
      keys.delete(k);
      continue;
    }
    r++;
    const kv = cur ? { c: cur.c, n: cur.n + 1, l: cur.l } : { c: r, n: 1, l: `sess-${i % 1000}` };
    keys.set(k, kv);
    out.push(line({ t: 'put', s: ++s, r, k, v: `{"id":${i},"address":"10.0.${i % 256}.${i % 199}:8080","meta":{"zone":"z${i % 3}"}}`, c: kv.c, n: kv.n, l: kv.l }));
  }
  await writeFile(seg, out.join(''));
}
const size = (await stat(seg)).size;
for (let run = 0; run < RUNS; run++) {
  const state = new State(() => 0, 50_000, 64 * 1024 * 1024, () => undefined);
  const t0 = process.hrtime.bigint();
  const loaded = await loadDataDir(DIR, state, { recover: false, log: (l) => process.stdout.write(`${l}\n`) });
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  process.stdout.write(`${run === 0 ? 'warm-up' : 'run'} ${run}: ${loaded.seq} records (${(size / 1e6).toFixed(1)} MB) replayed in ${ms.toFixed(0)} ms: ${((ms * 1e6) / loaded.seq).toFixed(0)} ns/record; revision ${state.rev}, ${state.store.keyCount} keys\n`);
}
