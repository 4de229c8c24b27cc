// Tables (terminal and Markdown), the aims check, SVG charts and BENCHMARKS.md, all from the
// results object bench/run.mjs writes to bench/results/latest.json.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import process from 'node:process';
import { consulTables } from '../consul.mjs';
import { sessionsTables } from '../sessions.mjs';

const COLS = ['roster', 'etcd', 'zookeeper', 'etcd-raw', 'zookeeper-raw', 'consul'];
const NAMES = {
  roster: 'roster',
  consul: 'consul:// (roster /v1)',
  etcd: 'etcd',
  zookeeper: 'ZooKeeper',
  'etcd-raw': 'etcd (raw etcd3)',
  'zookeeper-raw': 'ZooKeeper (raw client)',
};
const COLORS = { consul: '#8a5bb8', roster: '#1f6fb4', etcd: '#e8772e', zookeeper: '#3a9a3a', 'etcd-raw': '#f3b27f', 'zookeeper-raw': '#98cf98' };

// ------------------------------------------------------------------ formatting

function fmtNum(v, digits = 0) {
  if (v === undefined || v === null || Number.isNaN(v)) return '–';
  if (!Number.isFinite(v)) return String(v);
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}
const int = (v) => fmtNum(v, 0);
const d1 = (v) => fmtNum(v, 1);
const d2 = (v) => fmtNum(v, 2);
const bytes = (v) => (Number.isFinite(v) ? (Math.abs(v) >= 10 * 1024 * 1024 ? `${fmtNum(v / 2 ** 20, 0)} MiB` : Math.abs(v) >= 10 * 1024 ? `${fmtNum(v / 1024, 0)} KiB` : `${fmtNum(v, 0)} B`) : '–');

function ratio(v, base) {
  if (!Number.isFinite(v) || !Number.isFinite(base) || base === 0) return '–';
  const r = v / base;
  return `${r >= 10 ? fmtNum(r, 0) : r >= 1 ? fmtNum(r, 2) : fmtNum(r, 3)}×`;
}

// ------------------------------------------------------------------ table definitions

/** Per scenario: a title per case and the rows to show (get reads a median result). */
const DEFS = {
  register: {
    title: (c, p) => `Register ${int(c.n)} instances over ${p.services} services, ${p.inflight} in flight${p.minOps > c.n ? ` (${Math.ceil(p.minOps / c.n)} rounds on fresh keys, so the CPU figures rest on ${int(Math.ceil(p.minOps / c.n) * c.n)} registrations)` : ''}`,
    rows: [
      ['registrations/s', (m) => m.opsPerSec, int, 'higher'],
      ['latency p50 (ms)', (m) => m.p50, d2],
      ['latency p99 (ms)', (m) => m.p99, d2],
      ['server CPU per registration (µs)', (m) => m.serverCpuUsPerOp, int],
      ['  of which user / sys (µs)', (m) => [m.serverUserUsPerOp, m.serverSysUsPerOp], (v) => (Array.isArray(v) ? `${int(v[0])} / ${int(v[1])}` : '–'), 'none'],
      ['client CPU per registration (µs)', (m) => m.clientCpuUsPerOp, int],
    ],
  },
  keepalive: {
    title: (c, p) => `Keepalive load: ${int(c.n)} instances, ${p.perSession} per session (${int(Math.ceil(c.n / p.perSession))} sessions), TTL ${p.ttl / 1000} s, held ${p.holdMs / 1000} s`,
    rows: [
      ['server CPU (% of one core)', (m) => m.hold?.serverCpuPct, d1],
      ['server CPU per instance-second (µs)', (m) => m.hold?.serverCpuUsPerInstanceSec, d2],
      ['keepalive requests/s at the server', (m) => m.hold?.requestsPerSec, int],
      ['client bytes/s (sent + received)', (m) => m.hold?.clientBytesPerSec, bytes],
      ['client CPU (% of one core)', (m) => m.hold?.clientCpuPct, d1],
      ['sessions lost', (m) => m.hold?.lost, int, 'none'],
      ['setup: registrations/s', (m) => m.setupRate, int, 'higher'],
    ],
  },
  memory: {
    title: (c, p) => `Memory: server RSS growth for ${int(c.n)} registered instances (${p.perSession} per session)`,
    rows: [
      ['RSS per instance', (m) => m.rssPerInstance, bytes],
      ['RSS before → after', (m) => [m.rssBefore, m.rssAfter], (v) => (Array.isArray(v) ? `${bytes(v[0])} → ${bytes(v[1])}` : '–'), 'none'],
      ['JVM live heap per instance (after full GC)', (m) => m.liveHeapPerInstance, bytes],
    ],
  },
  watch: {
    title: (c, p) => `Watch fan-out: ${int(c.n)} watchers${c.procs > 1 ? ` spread over ${c.procs} client processes` : ' in one client process'} on one service; writer registers then deregisters ${p.instances} instances, one every ${p.intervalMs} ms${p.warmup ? `, after a warm-up (every process first writes and watches ${int(p.warmup)} registrations and deregistrations of a service of its own)` : ', no warm-up'}`,
    rows: [
      ['delivery latency p50 (ms)', (m) => m.p50, d2],
      ['delivery latency p99 (ms)', (m) => m.p99, d2],
      ['delivery latency max (ms)', (m) => m.max, d2],
      ['first watcher to see an event, p50 (ms)', (m) => m.firstP50, d2],
      ['last watcher to see an event, p50 (ms)', (m) => m.lastP50, d2],
      ['delivered / expected', (m) => [m.delivered, m.expected], (v) => (Array.isArray(v) ? `${int(v[0])} / ${int(v[1])}` : '–'), 'none'],
      ['lost events (must be 0)', (m) => m.lost, int, 'none'],
      ['server CPU per delivered event, writes included (µs)', (m) => m.serverCpuUsPerDelivery, d1],
      ['client CPU per delivered event (µs)', (m) => m.clientCpuUsPerDelivery, d1],
    ],
  },
  failure: {
    title: (c, p) => `Failure detection: registered process stopped, TTL ${p.ttl / 1000} s (${p.kills} SIGKILLs and ${p.graceful} graceful stops per run)`,
    rows: [
      ['SIGKILL → watcher sees it gone, median (ms)', (m) => m.killP50, int],
      ['  min / max over all kills (ms)', (m) => m.killMs, (v) => (Array.isArray(v) && v.length ? `${int(Math.min(...v))} / ${int(Math.max(...v))}` : '–'), 'none'],
      ['graceful stop (SIGTERM) → gone, median (ms)', (m) => m.stopP50, d1],
      ['  max over all stops (ms)', (m) => (Array.isArray(m.stopMs) && m.stopMs.length ? Math.max(...m.stopMs) : NaN), d1],
    ],
  },
  latency: {
    title: (c) => `Register and watch latency, one operation at a time (${int(c.n)} each; test/helpers/latency.ts's method): register = a put bound to a session; watch = put on one client → event at a watcher on another`,
    rows: [
      ['register p50 (ms)', (m) => m.regP50, d2],
      ['register p99 (ms)', (m) => m.regP99, d2],
      ['register max (ms)', (m) => m.regMax, d2],
      ['watch p50 (ms)', (m) => m.watchP50, d2],
      ['watch p99 (ms)', (m) => m.watchP99, d2],
      ['watch max (ms)', (m) => m.watchMax, d2],
    ],
  },
  coldstart: {
    title: () => 'Cold start: spawn the server → first request served (empty data dir)',
    rows: [
      ['median (ms)', (m) => m.p50, int],
      ['min (ms)', (m) => m.min, int],
      ['max (ms)', (m) => m.max, int],
    ],
  },
};

function tableFor(name, scenario) {
  const def = DEFS[name];
  const out = [];
  for (const c of scenario.cases) {
    const cols = COLS.filter((v) => c.results[v]);
    const header = ['', ...cols.map((v) => NAMES[v])];
    const hasEtcd = cols.includes('etcd');
    if (hasEtcd) header.push('roster ÷ etcd', 'ZooKeeper ÷ etcd');
    const rows = def.rows.map(([label, get, fmt, kind]) => {
      const vals = cols.map((v) => {
        const m = c.results[v].median;
        if (!m || m.error) return undefined;
        return get(m);
      });
      const row = [label, ...vals.map((x) => (x === undefined ? 'failed' : fmt(x)))];
      if (hasEtcd) {
        const e = vals[cols.indexOf('etcd')];
        const r = vals[cols.indexOf('roster')];
        const z = vals[cols.indexOf('zookeeper')];
        const ok = kind !== 'none' && typeof e === 'number';
        row.push(ok ? ratio(r, e) : '', ok ? ratio(z, e) : '');
      }
      return row;
    });
    const errors = cols.filter((v) => c.results[v].median?.error).map((v) => `${NAMES[v]}: ${c.results[v].median.error}`);
    const runs = cols.map((v) => c.results[v].median?.runs ?? 0);
    out.push({ title: def.title(c, scenario.params), header, rows, errors, runs: Math.min(...runs) });
  }
  return out;
}

function pickTable(scenario) {
  const c = scenario.cases[0];
  const header = ['strategy', 'ns per pick()+done()', 'best round (ns)', 'heap bytes per pick', 'build (ms)'];
  const rows = Object.entries(c.results).map(([name, r]) => {
    const m = r.median;
    if (m.error) return [name, 'failed', '', '', ''];
    return [name, d1(m.ns), d1(m.nsMin), Number.isFinite(m.bytes) ? d2(Math.max(0, m.bytes)) : 'n/a', d2(m.buildMs)];
  });
  return [{ title: `Client pick() at ${int(c.n)} instances (bench/pick.mjs, one process per strategy)`, header, rows, errors: [], runs: 0 }];
}

export function tables(results, names = Object.keys(results.scenarios)) {
  const out = [];
  for (const name of names) {
    const s = results.scenarios[name];
    if (!s) continue;
    out.push(...(name === 'pick' ? pickTable(s) : name === 'consul' ? consulTables(s) : name === 'sessions' ? sessionsTables(s) : tableFor(name, s)).map((t) => ({ ...t, scenario: name })));
  }
  return out;
}

// ------------------------------------------------------------------ terminal

export function printTables(results, names) {
  for (const t of tables(results, names)) {
    const w = t.header.map((h, i) => Math.max(String(h).length, ...t.rows.map((r) => String(r[i]).length)));
    const line = (r) => r.map((c, i) => (i === 0 ? String(c).padEnd(w[i]) : String(c).padStart(w[i]))).join('  ');
    process.stdout.write(`\n${t.title}\n${line(t.header)}\n${w.map((n) => '-'.repeat(n)).join('  ')}\n${t.rows.map(line).join('\n')}\n`);
    for (const e of t.errors) process.stdout.write(`  failed: ${e}\n`);
  }
}

// ------------------------------------------------------------------ aims

const ISSUE = {
  etcdReg: 2065,
  zkReg: 8587,
};

function lastCase(results, scenario) {
  return results.scenarios[scenario]?.cases.at(-1);
}

/** Rows: [what, etcd (issue), ZooKeeper (issue), aim, etcd here, ZooKeeper here, roster here, verdict]. */
export function aims(results) {
  const rows = [];
  const verdict = (ok) => (ok === undefined ? 'not run' : ok ? '**met**' : '**missed**');
  const reg = lastCase(results, 'register');
  if (reg) {
    const r = reg.results.roster?.median;
    const e = reg.results.etcd?.median;
    const z = reg.results.zookeeper?.median;
    const zr = reg.results['zookeeper-raw']?.median;
    const er = reg.results['etcd-raw']?.median;
    const bar = Math.max(2 * ISSUE.zkReg, 2 * (z?.opsPerSec ?? 0), 2 * (zr?.opsPerSec ?? 0));
    rows.push([
      `register ${int(reg.n)}, 64 in flight: reg/s`,
      `${int(ISSUE.etcdReg)}`,
      `${int(ISSUE.zkReg)}`,
      `>= 2x ZooKeeper (>= ${int(bar)})`,
      `${int(e?.opsPerSec)} (raw ${int(er?.opsPerSec)})`,
      `${int(z?.opsPerSec)} (raw ${int(zr?.opsPerSec)})`,
      int(r?.opsPerSec),
      verdict(r && !r.error ? r.opsPerSec >= bar : undefined),
    ]);
    rows.push([
      'register: server CPU per registration',
      '275 µs',
      '118 µs',
      '<= 50 µs',
      `${int(e?.serverCpuUsPerOp)} µs (raw ${int(er?.serverCpuUsPerOp)})`,
      `${int(z?.serverCpuUsPerOp)} µs (raw ${int(zr?.serverCpuUsPerOp)})`,
      `${int(r?.serverCpuUsPerOp)} µs`,
      verdict(r && !r.error ? r.serverCpuUsPerOp <= 50 : undefined),
    ]);
  }
  // The largest watcher count, in one client process and spread over several.
  const wcases = results.scenarios.watch?.cases ?? [];
  const wmax = Math.max(...wcases.map((c) => c.n));
  for (const w of wcases.filter((c) => c.n === wmax)) {
    const [r, e, z] = ['roster', 'etcd', 'zookeeper'].map((v) => w.results[v]?.median);
    const f = (m) => (m && !m.error ? `${d1(m.p50)} / ${d1(m.p99)} ms, ${int(m.lost)} lost (first watcher p50 ${d1(m.firstP50)} ms)` : '–');
    rows.push([
      `watch, ${int(w.n)} watchers${(w.procs ?? 1) > 1 ? ` over ${w.procs} processes` : ''}: p50 / p99`,
      '11.8 / 29.1 ms',
      '41.4 / 99.5 ms',
      '<= 3 / 10 ms, zero lost',
      f(e),
      f(z),
      f(r),
      verdict(r && !r.error ? r.p50 <= 3 && r.p99 <= 10 && r.lost === 0 : undefined),
    ]);
  }
  const fd = lastCase(results, 'failure');
  if (fd) {
    const ttl = results.scenarios.failure.params.ttl;
    const [r, e, z] = ['roster', 'etcd', 'zookeeper'].map((v) => fd.results[v]?.median);
    const f = (m) => (m && !m.error ? `median ${int(m.killP50)}, max ${int(Math.max(...m.killMs))} ms` : '–');
    rows.push([
      `SIGKILL → watcher sees it gone (TTL ${ttl / 1000} s)`,
      'TTL 2 s: median 1,981 ms',
      'session 4 s: median 3,960 ms',
      `<= TTL + 100 ms (${int(ttl + 100)} ms), every kill`,
      f(e),
      f(z),
      f(r),
      verdict(r && !r.error ? Math.max(...r.killMs) <= ttl + 100 : undefined),
    ]);
  }
  const mem = results.scenarios.memory ?? results.scenarios.keepalive;
  const mc = mem?.cases.at(-1);
  if (mc) {
    const [r, e, z] = ['roster', 'etcd', 'zookeeper'].map((v) => mc.results[v]?.median);
    rows.push([
      `memory per instance (${int(mc.n)} instances)`,
      '2.7 KB RSS',
      '~550 B live heap',
      '<= 600 B RSS',
      e && !e.error ? `${bytes(e.rssPerInstance)} RSS` : '–',
      z && !z.error ? `${bytes(z.rssPerInstance)} RSS, ${bytes(z.liveHeapPerInstance)} live heap` : '–',
      r && !r.error ? `${bytes(r.rssPerInstance)} RSS` : '–',
      verdict(r && !r.error ? r.rssPerInstance <= 600 : undefined),
    ]);
  }
  const pk = results.scenarios.pick?.cases[0];
  if (pk) {
    const ms = Object.entries(pk.results)
      .map(([name, x]) => ({ name, ...x.median }))
      .filter((m) => !m.error);
    const ok = (m) => m.ns < 100 && !(m.bytes >= 0.5);
    const bad = ms.filter((m) => !ok(m));
    const best = Math.min(...ms.map((m) => m.ns));
    const worst = Math.max(...ms.filter(ok).map((m) => m.ns));
    rows.push([
      `pick() at ${int(pk.n)} instances`,
      '-',
      '-',
      '< 100 ns, no allocation',
      '',
      '',
      `${ms.length - bad.length} of ${ms.length} strategies: ${d1(best)}–${d1(worst)} ns, 0 B` +
        bad.map((m) => `; ${m.name}: ${d1(m.ns)} ns, ${d2(Math.max(0, m.bytes))} B`).join(''),
      verdict(ms.length ? bad.length === 0 : undefined),
    ]);
  }
  return rows;
}

// ------------------------------------------------------------------ SVG

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * A horizontal grouped bar chart: groups of bars, one colour per system, value printed at the end
 * of each bar, optional dashed "aim" line. Plain SVG 1.1, no fonts beyond sans-serif.
 */
export function barChart({ title, subtitle, unit, groups, aim, fmt = int }) {
  const W = 760;
  const left = 190;
  const right = 110;
  const barH = 15;
  const gap = 3;
  const groupGap = 14;
  const top = (subtitle ? 58 : 42) + (aim ? 12 : 0);
  const values = groups.flatMap((g) => g.bars.map((b) => (Number.isFinite(b.value) ? b.value : 0))).filter((v) => v > 0);
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted[sorted.length >> 1] ?? 1;
  // An outlier far above the rest would flatten every other bar: such bars are cut at the axis end
  // (drawn with a break) and keep their true value in the label.
  const cap = 8 * mid;
  const max = Math.max(aim?.value ?? 0, ...values.map((v) => Math.min(v, cap))) || 1;
  const scale = (W - left - right) / max;
  let y = top;
  const parts = [];
  const height = groups.reduce((h, g) => h + g.bars.length * (barH + gap) - gap + groupGap, 0);
  if (aim) {
    // Drawn first, so bars and their labels sit on top of it.
    const x = left + aim.value * scale;
    parts.push(`<line x1="${x.toFixed(1)}" y1="${top - 6}" x2="${x.toFixed(1)}" y2="${top + height - groupGap + 4}" stroke="#c00" stroke-width="1.5" stroke-dasharray="5,3"/>`);
    parts.push(`<text x="${x.toFixed(1)}" y="${top - 9}" text-anchor="middle" font-size="11" fill="#c00">${esc(aim.label)}</text>`);
  }
  for (const g of groups) {
    const gh = g.bars.length * (barH + gap) - gap;
    parts.push(`<text x="${left - 10}" y="${y + gh / 2 + 4}" text-anchor="end" font-size="12" fill="#222">${esc(g.label)}</text>`);
    for (const b of g.bars) {
      const v = Number.isFinite(b.value) ? b.value : 0;
      const w = Math.max(1, Math.min(v, max) * scale);
      parts.push(`<rect x="${left}" y="${y}" width="${w.toFixed(1)}" height="${barH}" fill="${COLORS[b.series] ?? '#888'}"><title>${esc(`${NAMES[b.series] ?? b.series}: ${fmt(b.value)} ${unit}`)}</title></rect>`);
      if (v > max) {
        // Break mark: the bar is longer than the axis.
        const bx = left + w - 14;
        parts.push(`<path d="M${bx} ${y + barH + 1} l5 ${-barH - 2} M${bx + 5} ${y + barH + 1} l5 ${-barH - 2}" stroke="#fff" stroke-width="3"/>`);
      }
      parts.push(`<text x="${(left + w + 5).toFixed(1)}" y="${y + barH - 3}" font-size="11" fill="#333">${esc(Number.isFinite(b.value) ? `${fmt(b.value)} ${unit}` : 'failed')}</text>`);
      y += barH + gap;
    }
    y += groupGap - gap;
  }
  const bottom = y;
  const series = [...new Set(groups.flatMap((g) => g.bars.map((b) => b.series)))];
  let lx = left;
  const legendY = bottom + 8;
  for (const s of series) {
    parts.push(`<rect x="${lx}" y="${legendY}" width="11" height="11" fill="${COLORS[s] ?? '#888'}"/>`);
    parts.push(`<text x="${lx + 15}" y="${legendY + 10}" font-size="11" fill="#222">${esc(NAMES[s] ?? s)}</text>`);
    lx += 24 + (NAMES[s] ?? s).length * 6.3;
  }
  const H = legendY + 24;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="12" y="22" font-size="15" font-weight="bold" fill="#111">${esc(title)}</text>`,
    subtitle ? `<text x="12" y="40" font-size="11" fill="#555">${esc(subtitle)}</text>` : '',
    ...parts,
    '</svg>',
    '',
  ].join('\n');
}

function charts(results) {
  const out = [];
  const series = (c, variants, get) =>
    variants
      .filter((v) => c.results[v])
      .map((v) => {
        const m = c.results[v].median;
        return { series: v, value: m && !m.error ? get(m) : NaN };
      });
  const reg = results.scenarios.register;
  if (reg) {
    const variants = ['roster', 'etcd', 'zookeeper', 'etcd-raw', 'zookeeper-raw'];
    out.push({
      file: 'register-throughput.svg',
      alt: 'Registrations per second',
      svg: barChart({
        title: 'Register: registrations per second (higher is better)',
        subtitle: `${reg.params.inflight} in flight, ${reg.params.services} services, medians of ${results.meta.runs} run(s); client and server share ${results.meta.cpu}`,
        unit: 'reg/s',
        groups: reg.cases.map((c) => ({ label: `${int(c.n)} instances`, bars: series(c, variants, (m) => m.opsPerSec) })),
        aim: { value: 2 * ISSUE.zkReg, label: `aim ${int(2 * ISSUE.zkReg)}` },
      }),
    });
    out.push({
      file: 'register-cpu.svg',
      alt: 'Server CPU per registration',
      svg: barChart({
        title: 'Register: server CPU per registration (lower is better)',
        subtitle: 'user + system time of the server process (all threads) / registrations',
        unit: 'µs',
        groups: reg.cases.map((c) => ({ label: `${int(c.n)} instances`, bars: series(c, variants, (m) => m.serverCpuUsPerOp) })),
        aim: { value: 50, label: 'aim 50 µs' },
      }),
    });
  }
  const ka = results.scenarios.keepalive;
  if (ka && ka.params.holdMs > 0) {
    out.push({
      file: 'keepalive-cpu.svg',
      alt: 'Server CPU while holding sessions',
      svg: barChart({
        title: 'Keepalive load: server CPU while holding every instance (lower is better)',
        subtitle: `${ka.params.perSession} instances per session, TTL ${ka.params.ttl / 1000} s, held ${ka.params.holdMs / 1000} s`,
        unit: '% core',
        fmt: d1,
        groups: ka.cases.map((c) => ({ label: `${int(c.n)} instances`, bars: series(c, ['roster', 'etcd', 'zookeeper'], (m) => m.hold?.serverCpuPct) })),
      }),
    });
  }
  const w = results.scenarios.watch;
  if (w) {
    const groups = [];
    for (const c of w.cases) {
      const where = (c.procs ?? 1) > 1 ? ` (${c.procs} procs)` : '';
      groups.push({ label: `${int(c.n)} watchers${where} p50`, bars: series(c, COLS, (m) => m.p50) });
      groups.push({ label: `${int(c.n)} watchers${where} p99`, bars: series(c, COLS, (m) => m.p99) });
    }
    out.push({
      file: 'watch-latency.svg',
      alt: 'Watch delivery latency',
      svg: barChart({
        title: 'Watch fan-out: delivery latency (lower is better)',
        subtitle: `writer registers and deregisters ${w.params.instances} instances, one every ${w.params.intervalMs} ms${w.params.warmup ? `, after ${int(w.params.warmup)} warm-up writes per process` : ""}; latency = watcher sees it − write started`,
        unit: 'ms',
        fmt: d1,
        groups,
      }),
    });
  }
  const mem = results.scenarios.memory ?? results.scenarios.keepalive;
  if (mem) {
    out.push({
      file: 'memory.svg',
      alt: 'Server RSS per instance',
      svg: barChart({
        title: 'Memory: server RSS growth per registered instance (lower is better)',
        subtitle: `${mem.params.perSession} instances per session; RSS after registering minus RSS before`,
        unit: 'B',
        groups: mem.cases.map((c) => ({ label: `${int(c.n)} instances`, bars: series(c, ['roster', 'etcd', 'zookeeper'], (m) => m.rssPerInstance) })),
        aim: { value: 600, label: 'aim 600 B' },
      }),
    });
  }
  const fd = results.scenarios.failure;
  if (fd) {
    const c = fd.cases[0];
    out.push({
      file: 'failure.svg',
      alt: 'Failure detection',
      svg: barChart({
        title: 'Failure detection: signal → watcher sees the instance gone (lower is better)',
        subtitle: `TTL ${fd.params.ttl / 1000} s; SIGKILL leaves the session to expire, SIGTERM deregisters`,
        unit: 'ms',
        groups: [
          { label: 'SIGKILL, median', bars: series(c, ['roster', 'etcd', 'zookeeper'], (m) => m.killP50) },
          { label: 'SIGKILL, worst', bars: series(c, ['roster', 'etcd', 'zookeeper'], (m) => Math.max(...(m.killMs ?? [NaN]))) },
          { label: 'SIGTERM, median', bars: series(c, ['roster', 'etcd', 'zookeeper'], (m) => m.stopP50) },
        ],
        aim: { value: fd.params.ttl + 100, label: 'TTL + 100 ms' },
      }),
    });
  }
  return out;
}

// ------------------------------------------------------------------ Markdown

function mdTable(header, rows) {
  const esc2 = (c) => String(c).replace(/\|/g, '\\|');
  return [`| ${header.map(esc2).join(' | ')} |`, `|${header.map((_, i) => (i === 0 ? '---' : '---:')).join('|')}|`, ...rows.map((r) => `| ${r.map(esc2).join(' | ')} |`)].join('\n');
}

export function renderMarkdown(results, { root, resultsDir }) {
  mkdirSync(resultsDir, { recursive: true });
  const m = results.meta;
  const rel = path.relative(root, resultsDir);
  const lines = [];
  lines.push('# Benchmarks: roster against etcd and ZooKeeper');
  lines.push('');
  lines.push('<!-- Generated by bench/run.mjs from bench/results/latest.json; the analysis comes from bench/NOTES.md. Do not edit by hand. -->');
  lines.push('');
  lines.push(`Command: \`${m.command}\` (after \`npm run build\`), ${m.date.slice(0, 16).replace('T', ' ')} UTC, ${m.durationS ? `${Math.round(m.durationS / 60)} min` : ''}.`);
  for (const mg of m.merged ?? []) {
    lines.push(
      `Then \`${mg.command}\` at ${mg.date.slice(0, 16).replace('T', ' ')} UTC re-ran ${mg.scenarios.join(', ')} (${mg.runs} runs; load average ${mg.loadavgStart.join(' / ')} at its start, ${mg.loadavgEnd?.join(' / ') ?? '?'} at its end) and replaced those results.`,
    );
  }
  lines.push('');
  lines.push(
    `Machine: ${m.cpu}, ${m.memGiB} GiB, Linux ${m.kernel}. Node ${m.versions.node}, etcd ${m.versions.etcd}, ZooKeeper ${m.versions.zookeeper} on ${m.versions.java}. ` +
      `Load average (1/5/15 min) at start ${m.loadavgStart.join(' / ')}, at the end ${m.loadavgEnd?.join(' / ') ?? '?'}; ` +
      `the machine was shared with other work, so absolute rates are conservative; CPU per operation is the steadier figure.`,
  );
  lines.push('');
  lines.push(
    `Method: every system runs on loopback, started fresh for each measurement with an empty data dir; the client is a separate Node process ` +
      `(bench/worker.mjs) on the same ${m.cpu.split(' x').pop()} cores, using roster's own API (\`openBackend(url)\` + \`Registrar\` / \`Backend.watch\`) ` +
      `against every system, plus the raw \`etcd3\` / \`node-zookeeper-client\` libraries as a reference for registration and watches. ` +
      `${m.runs} run(s) per system, systems alternated run by run (the order rotates), every figure the median over runs; ratios are to etcd. ` +
      `The register and watch scenarios warm every client process and the server up before they measure (the same for every system; see their titles): ` +
      `a JIT-compiled process (roster's Node, ZooKeeper's JVM, the etcd3 client) runs its first few thousand calls in slower baseline code. ` +
      `Server CPU is user + system time of the server process (all threads) from /proc/<pid>/stat around the measured phase; client CPU is the worker's own.`,
  );
  lines.push('');
  lines.push(
    `Configuration: roster server = \`roster server\` (durable: every write fsynced before it is acknowledged, group commit); ` +
      `etcd single member, default settings; ZooKeeper standalone, tickTime ${m.zkTickMs} ms (its default 2000 ms cannot grant a 2 s session), forceSync on, ` +
      `heap limit 1 GiB. The remote client uses up to 64 connections for 64 requests in flight. Registrations use \`Registrar\` with \`repair: false\` ` +
      `(no own-key watch), one session per client.`,
  );
  lines.push('');
  if (m.quick) lines.push('**This is a --quick smoke run: small sizes, one run. Do not quote these figures.**\n');
  lines.push('## Aims (issue 7)');
  lines.push('');
  lines.push(mdTable(['scenario', 'etcd (issue)', 'ZooKeeper (issue)', 'aim for roster', 'etcd here', 'ZooKeeper here', 'roster here', 'verdict'], aims(results)));
  lines.push('');
  const chartList = charts(results);
  for (const c of chartList) writeFileSync(path.join(resultsDir, c.file), c.svg);
  if (chartList.length) {
    lines.push('## Charts');
    lines.push('');
    for (const c of chartList) lines.push(`![${c.alt}](${rel}/${c.file})`, '');
  }
  lines.push('## Results');
  lines.push('');
  let last = '';
  for (const t of tables(results)) {
    if (t.scenario !== last) {
      const la = results.scenarios[t.scenario]?.loadavg;
      lines.push(`### ${t.scenario}${la ? ` (load average when it finished: ${la.join(' / ')})` : ''}`, '');
      last = t.scenario;
    }
    lines.push(`**${t.title}**`, '');
    lines.push(mdTable(t.header, t.rows));
    for (const e of t.errors) lines.push('', `Failed: ${e}`);
    lines.push('');
  }
  if (results.profile) {
    const p = results.profile;
    lines.push('## Where the roster server\'s time goes (register load, CPU profile)');
    lines.push('');
    lines.push(
      `\`node --cpu-prof\` on the server while it took ${int(p.n)} registrations (plus warm-up) at ${int(p.result.opsPerSec)}/s: ` +
        `${int(p.busyMs)} ms of sampled busy time, ${int(p.result.serverCpuUsPerOp)} µs of CPU per registration (${int(p.result.serverUserUsPerOp)} user + ${int(p.result.serverSysUsPerOp)} sys). ` +
        'Syscalls show up under the JavaScript function that made them (writev, writeBuffer, fdatasync).',
    );
    lines.push('');
    lines.push(mdTable(['area', 'share of busy time', 'ms'], p.areas.map((a) => [a.name, `${d1(a.pct)}%`, int(a.ms)])));
    lines.push('');
    lines.push(mdTable(['function (self time)', 'share', 'ms'], p.functions.slice(0, 15).map((a) => [a.name, `${d1(a.pct)}%`, int(a.ms)])));
    lines.push('');
  }
  const notes = path.join(root, 'bench', 'NOTES.md');
  if (existsSync(notes)) {
    lines.push(readFileSync(notes, 'utf8').trim(), '');
  }
  lines.push('## Reproducing');
  lines.push('');
  lines.push('```sh');
  lines.push('npm run build');
  lines.push('npm run bench                     # full run, 3 runs per system (about 30-45 min on 2 cores); writes this file');
  lines.push('npm run bench -- --quick          # smoke run, a few minutes, leaves this file alone');
  lines.push('npm run bench -- --only watch,failure --runs 5');
  lines.push('npm run bench -- --fleet-sizes 10000,30000 --hold 10   # scale the keepalive / memory case down');
  lines.push('npm run bench -- --profile        # also profile the roster server under the register load');
  lines.push('npm run bench -- --only consul --merge   # the Consul API scenario (blocking queries, health checks) into these results');
  lines.push('npm run bench -- --only latency --merge  # register / watch latency on every backend, consul:// included, into these results');
  lines.push('```');
  lines.push('');
  lines.push(`Raw results of this run: [${rel}/latest.json](${rel}/latest.json).`);
  lines.push('');
  writeFileSync(path.join(root, 'BENCHMARKS.md'), lines.join('\n'));
}
