/* global document, window, location, history, fetch, URL, URLSearchParams, AbortController, AbortSignal,
   TextDecoderStream, requestAnimationFrame, setTimeout, clearTimeout, setInterval, performance, Node, console,
   sessionStorage, Element */
/**
 * roster dashboard: plain ES module, no build step, no dependencies, served by `roster server` at /ui/.
 *
 * Data sources (all same-origin, relative to the server root so a reverse-proxy prefix works):
 * - one watch stream over `services/` (GET /api/v1/watch, Server-Sent Events, id = revision): the
 *   services list, instance tables, "recent changes" and the event log are all derived from it;
 * - /healthz and /api/v1/status (every figure of the header at one revision), polled, and again
 *   when the server's event history says something happened;
 * - /api/v1/sessions (polled while the Sessions view is open);
 * - the Keys view: /api/v1/keys?prefix= once, then a watch of that prefix from the listed revision
 *   (live, never polled);
 * - the server's event history (GET /api/v1/events, long-polled): what happened before the page
 *   opened, and the trigger for refreshing the Locks view (/api/v1/locks) and the header;
 * - POST /api/v1/acl/check: what the caller's token may do, so that write buttons (drain,
 *   deregister, KV edit / delete / create) are shown only where the server would accept them. The
 *   server checks every write anyway; a hidden button is a courtesy, not the guard.
 *
 * Writes (PATCH / DELETE /api/v1/instances, PUT / DELETE /api/v1/keys) carry the same CSRF marker
 * as every API client (`X-Roster-Request: 1`, JSON bodies) and go to the page's own origin, so the
 * server's Host allow-list and CSRF rule apply to them unchanged (docs/security.md).
 *
 * The watch is read with fetch() rather than EventSource so that (a) a silently dead connection is
 * detected — the server sends a heartbeat comment every `roster-heartbeat-ms` and EventSource hides
 * comments — and (b) reconnects are ours: jittered backoff, resume with Last-Event-ID = the last
 * revision applied, and the staleness shown to the user is exact.
 *
 * Auth: a server with tokens on answers 401 without one; the page then shows its sign-in form. The
 * token is kept in this tab's sessionStorage only (gone when the tab closes, never in a cookie, so
 * no other site can make the browser send it) and goes out as `Authorization: Bearer` on every
 * request (`api()`).
 *
 * Safety: every string from the registry (keys, values, names, metadata) is untrusted. The DOM is
 * built with createElement/textContent/setAttribute only (see `h`); innerHTML is never used, and
 * index.html's CSP forbids inline script as a second line of defence.
 */

const BASE = new URL('../', document.baseURI); // the page lives at <root>/ui/
const ROOT = 'services/';
const SERVICE_RE = /^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;
const FADE_MS = 1500; // how long a removed instance/service stays visible, fading out
const NEW_MS = 4000; // how long a new instance is highlighted
const LOG_MAX = 500; // events kept in the log
const RECENT_MAX = 8;
const KEYS_MAX_ROWS = 1000;
const HEALTH_EVERY_MS = 5000;
const SESSIONS_EVERY_MS = 2000;
const HEALTH = ['passing', 'warning', 'critical'];
const HISTORY_MAX = 1000;
const CONFIRM_MS = 4000;

// ---------------------------------------------------------------------------------------------- DOM

const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

/**
 * Build an element. `props` values become attributes (never event handlers); children that are not
 * Nodes become text nodes. This is the only way data reaches the DOM.
 */
function h(tag, props, ...kids) {
  const el = document.createElement(tag);
  if (props) {
    for (const [k, v] of Object.entries(props)) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) throw new Error(`h(): refusing attribute ${k}`);
      if (k === 'class') el.className = v;
      else el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const c of kids.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function setText(el, text) {
  const s = String(text);
  if (el.textContent !== s) el.textContent = s;
}

function url(path, params) {
  const u = new URL(path, BASE);
  if (params) for (const [k, v] of Object.entries(params)) u.searchParams.set(k, v);
  return u;
}

// ---------------------------------------------------------------------------------------- formatting

function fmtDuration(ms) {
  if (!Number.isFinite(ms)) return '–';
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${String(s % 60).padStart(2, '0')}s`;
  const hr = Math.floor(m / 60);
  if (hr < 48) return `${hr}h ${String(m % 60).padStart(2, '0')}m`;
  return `${Math.floor(hr / 24)}d ${hr % 24}h`;
}

function fmtTtl(ms) {
  if (!Number.isFinite(ms)) return '–';
  if (ms < 1000) return `${ms}ms`;
  if (ms % 1000 === 0 || ms >= 10_000) return fmtDuration(ms);
  return `${(ms / 1000).toFixed(1)}s`;
}

function ago(ts) {
  const d = Date.now() - ts;
  if (d < 1500) return 'just now';
  return `${fmtDuration(d)} ago`;
}

function clock(ts) {
  const d = new Date(ts);
  return [d.getHours(), d.getMinutes(), d.getSeconds()].map((n) => String(n).padStart(2, '0')).join(':');
}

function isoOf(ts) {
  try {
    return new Date(ts).toISOString();
  } catch {
    return String(ts);
  }
}

function endpoint(inst) {
  if (!inst || typeof inst.address !== 'string') return '';
  const host = inst.address.includes(':') ? `[${inst.address}]` : inst.address;
  return inst.port === undefined ? host : `${host}:${inst.port}`;
}

function shortId(id) {
  return id.length > 10 ? `${id.slice(0, 8)}…` : id;
}

function truncate(s, n) {
  return s.length > n ? `${s.slice(0, n - 1)}…` : s;
}

function jitter(ms) {
  return ms * (0.9 + Math.random() * 0.2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

const TOKEN_KEY = 'roster.token';

function savedToken() {
  try {
    return sessionStorage.getItem(TOKEN_KEY) || '';
  } catch {
    return '';
  }
}

/** fetch() with the token; a 401 shows the sign-in form. */
async function api(input, init = {}) {
  const t = savedToken();
  const headers = { ...(init.headers || {}) };
  if (t) headers.authorization = `Bearer ${t}`;
  const res = await fetch(input, { ...init, headers });
  if (res.status === 401) needLogin(t ? 'That token was not accepted: it is unknown, revoked or mistyped.' : '');
  return res;
}

/** Set once the server refused this page's token (or its lack of one): the page's own loops (event
 *  history, permission questions) stop asking until the user signs in, which reloads the page. */
let loginNeeded = false;

function needLogin(message) {
  loginNeeded = true;
  $('login').hidden = false;
  setText($('login-error'), message);
}

async function httpError(res) {
  let msg = `HTTP ${res.status}`;
  try {
    const body = await res.json();
    const e = body && body.error;
    if (e && typeof e.message === 'string') msg = `${e.code ?? res.status}: ${e.message}`;
  } catch {
    // not JSON: the status line says enough
  }
  return new Error(msg);
}

/** A state-changing request: the CSRF marker, a JSON body, the token; throws the server's error. */
async function write(method, path, body, params) {
  const headers = { accept: 'application/json', 'x-roster-request': '1' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  const res = await api(url(path, params), { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: 'no-store', signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw await httpError(res);
  try {
    return await res.json();
  } catch {
    return null;
  }
}

const keyPath = (key) => `api/v1/keys/${encodeURIComponent(key)}`;

async function getJson(path, params, timeoutMs = 8000) {
  const res = await api(url(path, params), { cache: 'no-store', headers: { accept: 'application/json' }, signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw await httpError(res);
  return res.json();
}

function errMsg(e) {
  if (e && typeof e === 'object' && 'message' in e) return String(e.message);
  return String(e);
}

// -------------------------------------------------------------------------------------- SSE stream

/** Incremental text/event-stream parser (WHATWG rules, enough for roster's frames). */
class SseParser {
  constructor(onEvent, onComment, onRetry) {
    this.onEvent = onEvent;
    this.onComment = onComment;
    this.onRetry = onRetry;
    this.buf = '';
    this.scan = 0;
    this.event = '';
    this.data = [];
    this.id = undefined;
  }

  push(text) {
    this.buf += text;
    let start = 0;
    for (;;) {
      const nl = this.buf.indexOf('\n', Math.max(start, this.scan));
      if (nl < 0) break;
      let line = this.buf.slice(start, nl);
      if (line.endsWith('\r')) line = line.slice(0, -1);
      start = nl + 1;
      this.scan = start;
      this.line(line);
    }
    this.buf = this.buf.slice(start);
    this.scan = this.buf.length;
  }

  line(line) {
    if (line === '') {
      if (this.data.length > 0) this.onEvent({ type: this.event || 'message', data: this.data.join('\n'), id: this.id });
      this.event = '';
      this.data = [];
      return;
    }
    if (line[0] === ':') {
      this.onComment();
      return;
    }
    const c = line.indexOf(':');
    const field = c < 0 ? line : line.slice(0, c);
    let value = c < 0 ? '' : line.slice(c + 1);
    if (value[0] === ' ') value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id') this.id = value;
    else if (field === 'retry' && /^\d+$/.test(value)) this.onRetry(Number(value));
  }
}

/**
 * One watch over a prefix, kept alive forever: reconnects with jittered exponential backoff and
 * resumes after the last revision applied (Last-Event-ID), so the view is gap-free; if the server no
 * longer has that history it answers with a `reset` frame carrying the full state.
 */
class WatchStream {
  constructor(prefix, handlers, fromRevision = 0) {
    this.prefix = prefix;
    this.h = handlers;
    this.lastId = fromRevision;
    this.retryMs = 1000;
    this.stopped = false;
    this.ac = undefined;
  }

  start() {
    this.loop().catch((e) => console.error('roster: watch loop failed', e));
  }

  stop() {
    this.stopped = true;
    this.ac?.abort();
  }

  async loop() {
    let failures = 0;
    while (!this.stopped) {
      // A refused token is not tried again: the sign-in reloads the page with the new one.
      if (loginNeeded) {
        await sleep(1000);
        continue;
      }
      this.opened = false;
      let err;
      try {
        await this.once();
        err = new Error('the server ended the stream');
      } catch (e) {
        err = e;
      }
      if (this.stopped) return;
      failures = this.opened ? 1 : failures + 1;
      this.h.onDown(err, failures);
      const cap = Math.min(this.retryMs * 2 ** (failures - 1), 5000);
      await sleep(cap / 2 + (Math.random() * cap) / 2);
    }
  }

  async once() {
    const ac = (this.ac = new AbortController());
    const headers = { accept: 'text/event-stream' };
    if (this.lastId > 0) headers['last-event-id'] = String(this.lastId);
    const connectTimer = setTimeout(() => ac.abort(new Error('connecting timed out')), 10_000);
    let res;
    try {
      res = await api(url('api/v1/watch', { prefix: this.prefix }), { headers, cache: 'no-store', signal: ac.signal });
    } finally {
      clearTimeout(connectTimer);
    }
    if (!res.ok) throw await httpError(res);
    if (!res.body) throw new Error('no response body');
    const hb = Number(res.headers.get('roster-heartbeat-ms')) || 15_000;
    // The server's own rule: 2.5 heartbeat intervals of silence mean the connection is dead.
    const silenceMs = Math.max(2.5 * hb, 3000);
    this.opened = true;
    this.h.onOpen(this.lastId);
    let timer;
    const arm = () => {
      clearTimeout(timer);
      timer = setTimeout(() => ac.abort(new Error(`no data or heartbeat for ${fmtDuration(silenceMs)}`)), silenceMs);
    };
    const parser = new SseParser(
      (ev) => {
        this.h.onEvent(ev);
        if (ev.id !== undefined && /^\d+$/.test(ev.id)) this.lastId = Math.max(this.lastId, Number(ev.id));
      },
      () => {},
      (ms) => {
        this.retryMs = Math.min(Math.max(ms, 250), 30_000);
      },
    );
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    arm();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) return;
        arm();
        parser.push(value);
      }
    } finally {
      clearTimeout(timer);
      ac.abort();
    }
  }
}

// ------------------------------------------------------------------------------------------- model

/**
 * The live view of `services/`: service → id → record. A record is one key decoded leniently (so a
 * malformed entry is shown as such, not hidden). Removed records linger for FADE_MS with `gone` set.
 */
const model = {
  services: new Map(),
  revision: 0,
  synced: false,
  lastChangeAt: 0,
  lastChangeRev: 0,
};

function decode(kv) {
  if (!kv || typeof kv.key !== 'string' || !kv.key.startsWith(ROOT)) return null;
  const rest = kv.key.slice(ROOT.length);
  const slash = rest.indexOf('/');
  // Only `services/<service>/<id>`, as the server's /api/v1/services counts them.
  if (slash <= 0 || slash === rest.length - 1 || rest.indexOf('/', slash + 1) >= 0) return null;
  const service = rest.slice(0, slash);
  const id = rest.slice(slash + 1);
  let raw;
  let problem = null;
  try {
    raw = JSON.parse(typeof kv.value === 'string' ? kv.value : '');
  } catch {
    problem = 'value is not JSON';
  }
  let inst = null;
  if (!problem) {
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) problem = 'value is not a JSON object';
    else inst = normalize(raw);
  }
  if (inst && !inst.address) problem = 'no address';
  if (!SERVICE_RE.test(service)) problem = problem ?? 'invalid service name';
  const hay = [service, id, kv.key];
  if (inst) {
    hay.push(inst.address, endpoint(inst), inst.zone, inst.status, ...inst.tags);
    for (const [k, v] of inst.metadata) hay.push(`${k}=${v}`);
  }
  return { key: kv.key, service, id, kv, inst, problem, hay: hay.filter(Boolean).join('\n').toLowerCase(), born: 0, gone: 0, updated: 0 };
}

function normalize(o) {
  const str = (v) => (typeof v === 'string' && v !== '' ? v : undefined);
  const tags = Array.isArray(o.tags) ? o.tags.filter((t) => typeof t === 'string') : [];
  const metadata = [];
  if (o.metadata && typeof o.metadata === 'object' && !Array.isArray(o.metadata)) {
    for (const [k, v] of Object.entries(o.metadata)) metadata.push([k, typeof v === 'string' ? v : JSON.stringify(v)]);
  }
  metadata.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return {
    address: str(o.address),
    port: Number.isInteger(o.port) ? o.port : undefined,
    zone: str(o.zone),
    weight: Number.isFinite(o.weight) ? o.weight : 1,
    status: str(o.status) ?? 'up',
    tags,
    metadata,
    registeredAt: Number.isFinite(o.registeredAt) ? o.registeredAt : undefined,
    // Written by the server's health checker (absent: no checks, counted as passing).
    health: HEALTH.includes(o.health) ? o.health : undefined,
  };
}

function findRec(key) {
  if (!key.startsWith(ROOT)) return undefined;
  const rest = key.slice(ROOT.length);
  const slash = rest.indexOf('/');
  if (slash <= 0) return undefined;
  return model.services.get(rest.slice(0, slash))?.get(rest.slice(slash + 1));
}

function putRec(kv, live) {
  const rec = decode(kv);
  if (!rec) return null;
  let svc = model.services.get(rec.service);
  if (!svc) model.services.set(rec.service, (svc = new Map()));
  const prev = svc.get(rec.id);
  const now = Date.now();
  if (prev && !prev.gone) {
    rec.born = prev.born;
    if (live && prev.kv.modRevision !== kv.modRevision) rec.updated = now;
    else rec.updated = prev.updated;
  } else {
    rec.born = live ? now : 0;
  }
  svc.set(rec.id, rec);
  return rec;
}

function removeRec(key, live) {
  const rec = findRec(key);
  if (!rec || rec.gone) return rec;
  if (live) {
    rec.gone = Date.now();
    scheduleSweep();
  } else {
    dropRec(rec);
  }
  return rec;
}

function dropRec(rec) {
  const svc = model.services.get(rec.service);
  if (!svc || svc.get(rec.id) !== rec) return;
  svc.delete(rec.id);
  if (svc.size === 0) model.services.delete(rec.service);
}

let sweepTimer;
function scheduleSweep() {
  if (sweepTimer) return;
  sweepTimer = setTimeout(() => {
    sweepTimer = undefined;
    const now = Date.now();
    let more = false;
    for (const svc of [...model.services.values()]) {
      for (const rec of [...svc.values()]) {
        if (!rec.gone) continue;
        if (now - rec.gone >= FADE_MS) dropRec(rec);
        else more = true;
      }
    }
    if (more) scheduleSweep();
    schedule();
  }, FADE_MS + 50);
}

/** Replace the whole view by `items` (snapshot or reset). Live: show what appeared and faded. */
function replaceAll(items, live) {
  const seen = new Set();
  for (const kv of items) {
    const rec = putRec(kv, live);
    if (rec) seen.add(rec.key);
  }
  for (const svc of [...model.services.values()]) {
    for (const rec of [...svc.values()]) if (!seen.has(rec.key)) removeRec(rec.key, live);
  }
}

function liveRecs(svc) {
  const out = [];
  for (const r of svc.values()) if (!r.gone) out.push(r);
  return out;
}

// --------------------------------------------------------------------------------------- event log

const log = { entries: [], seq: 0 };

function addLog(type, rev, key, detail) {
  log.entries.unshift({ seq: ++log.seq, at: Date.now(), type, rev, key, detail });
  if (log.entries.length > LOG_MAX) log.entries.length = LOG_MAX;
}

function describeRec(rec) {
  if (!rec) return '';
  if (rec.problem) return `invalid: ${rec.problem}`;
  const parts = [endpoint(rec.inst)];
  if (rec.inst.zone) parts.push(`zone ${rec.inst.zone}`);
  if (rec.inst.status !== 'up') parts.push(rec.inst.status);
  return parts.join(' · ');
}

// ---------------------------------------------------------------------------------------- ui state

const ui = {
  view: 'services',
  selected: null, // service name from the URL, or null: the first one shown
  filter: [],
  eventsFilter: [],
  conn: 'connecting',
  connSince: Date.now(),
  connError: '',
  attempts: 0,
  health: { state: 'unknown', revision: undefined, uptime: undefined, at: 0, message: '' },
  status: null, // GET /api/v1/status: the header's figures, all at one revision
  sessions: { list: [], at: 0, error: '', loading: false },
  keys: { prefix: '', result: null, error: '', loading: false, at: 0, live: false, editing: null, v: 0 },
  locks: { locks: [], elections: [], revision: 0, at: 0, error: '' },
  checks: null, // { service, id, list, error, at }: the per-check panel of one instance
  actionMsg: '',
  renderedLogSeq: 0,
};

// ------------------------------------------------------------------------------------ stream wiring

const stream = new WatchStream(ROOT, {
  onOpen(fromRev) {
    const wasStale = ui.conn === 'stale';
    const staleFor = Date.now() - ui.connSince;
    ui.conn = 'live';
    ui.connSince = Date.now();
    ui.connError = '';
    ui.attempts = 0;
    if (wasStale) addLog('info', undefined, '', `live updates resumed after ${fmtDuration(staleFor)}${fromRev ? ` (from revision ${fromRev})` : ''}`);
    void pollHealth();
    schedule();
  },
  onDown(err, attempts) {
    ui.attempts = attempts;
    // fetch() rejects with a bare TypeError ("Failed to fetch") when the server cannot be reached.
    ui.connError = err instanceof TypeError ? 'cannot reach the server' : errMsg(err);
    if (ui.conn !== 'stale') {
      ui.conn = 'stale';
      ui.connSince = Date.now();
      addLog('error', undefined, '', `live updates interrupted at revision ${model.revision}: ${ui.connError}`);
      void pollHealth();
    }
    schedule();
  },
  onEvent(ev) {
    try {
      applyEvent(ev);
    } catch (e) {
      // A frame we cannot read means client and server disagree on the protocol: say so, keep going.
      console.error('roster: cannot apply watch frame', ev.type, e);
      addLog('error', undefined, '', `cannot apply ${ev.type} frame: ${errMsg(e)}`);
    }
    schedule();
  },
});

function applyEvent(ev) {
  const d = JSON.parse(ev.data);
  switch (ev.type) {
    case 'snapshot':
    case 'reset': {
      const items = Array.isArray(d.items) ? d.items : [];
      const live = model.synced;
      replaceAll(items, live);
      model.revision = Math.max(model.revision, Number(d.revision) || 0);
      if (ev.type === 'reset') addLog('reset', d.revision, ROOT, `history was compacted: view replaced by the state at revision ${d.revision} (${items.length} keys)`);
      break;
    }
    case 'synced': {
      const first = !model.synced;
      model.synced = true;
      model.revision = Math.max(model.revision, Number(d.revision) || 0);
      if (first) {
        let n = 0;
        for (const svc of model.services.values()) n += liveRecs(svc).length;
        addLog('info', d.revision, ROOT, `synced: ${model.services.size} services, ${n} instances`);
      }
      break;
    }
    case 'put': {
      const rec = putRec(d.kv, model.synced);
      model.revision = Math.max(model.revision, d.revision);
      model.lastChangeAt = Date.now();
      model.lastChangeRev = d.revision;
      addLog(d.kv && d.kv.version === 1 ? 'create' : 'update', d.revision, d.key, rec ? describeRec(rec) : '');
      if (rec && ui.checks && ui.checks.service === rec.service && ui.checks.id === rec.id) void loadChecks();
      break;
    }
    case 'delete': {
      const rec = removeRec(d.key, model.synced);
      model.revision = Math.max(model.revision, d.revision);
      model.lastChangeAt = Date.now();
      model.lastChangeRev = d.revision;
      addLog('delete', d.revision, d.key, rec ? describeRec(rec) : '');
      break;
    }
    default:
      break; // unknown frame types are for newer dashboards
  }
}

// --------------------------------------------------------------------------------------- polling

let healthTimer;
let healthInflight;
function pollHealth() {
  clearTimeout(healthTimer);
  healthInflight ??= Promise.allSettled([fetchHealth(), loginNeeded ? undefined : fetchStatus()]).finally(() => {
    healthInflight = undefined;
    schedule();
    healthTimer = setTimeout(pollHealth, jitter(ui.conn === 'live' ? HEALTH_EVERY_MS : HEALTH_EVERY_MS / 2));
  });
  return healthInflight;
}

async function fetchHealth() {
  try {
    const res = await api(url('healthz'), { cache: 'no-store', signal: AbortSignal.timeout(4000) });
    let body = null;
    try {
      body = await res.json();
    } catch {
      body = null;
    }
    if (res.ok && body && body.status === 'ok') {
      ui.health = { state: 'ok', revision: body.revision, uptime: body.uptimeSeconds, at: Date.now(), message: '' };
    } else {
      const m = body && body.error && typeof body.error.message === 'string' ? body.error.message : `HTTP ${res.status}`;
      ui.health = { ...ui.health, state: 'unavailable', at: Date.now(), message: m };
    }
  } catch (e) {
    ui.health = { ...ui.health, state: 'unreachable', at: Date.now(), message: errMsg(e) };
  }
}

/** Every figure of the header from one answer, at one revision (not mixed from several sources). */
async function fetchStatus() {
  try {
    const res = await api(url('api/v1/status'), { cache: 'no-store', headers: { accept: 'application/json' }, signal: AbortSignal.timeout(4000) });
    if (!res.ok) return;
    ui.status = await res.json();
  } catch {
    // health shows the reachability problem; keep the last figures
  }
}

let statusTimer;
/** Refresh the header soon (coalesced): something happened on the server. */
function statusSoon() {
  if (statusTimer) return;
  statusTimer = setTimeout(() => {
    statusTimer = undefined;
    void fetchStatus().then(schedule);
  }, 200);
}

let sessTimer;
async function pollSessions() {
  clearTimeout(sessTimer);
  if (ui.view !== 'sessions') return;
  ui.sessions.loading = true;
  try {
    const body = await getJson('api/v1/sessions');
    const list = Array.isArray(body.sessions) ? body.sessions : [];
    const at = performance.now();
    ui.sessions.list = list
      .filter((s) => s && typeof s.id === 'string')
      .map((s) => ({ id: s.id, ttl: Number(s.ttl), remaining: Number(s.remaining), keys: Number(s.keys), deadline: at + Number(s.remaining) }))
      .sort((a, b) => a.deadline - b.deadline || (a.id < b.id ? -1 : 1));
    ui.sessions.at = Date.now();
    ui.sessions.error = '';
  } catch (e) {
    ui.sessions.error = errMsg(e);
  } finally {
    ui.sessions.loading = false;
  }
  renderSessions();
  if (ui.view === 'sessions') sessTimer = setTimeout(pollSessions, jitter(SESSIONS_EVERY_MS));
}

let keysAc;
async function loadKeys() {
  keysAc?.abort();
  const ac = (keysAc = new AbortController());
  const prefix = ui.keys.prefix;
  ui.keys.loading = true;
  renderKeys();
  try {
    const res = await api(url('api/v1/keys', { prefix }), { cache: 'no-store', signal: AbortSignal.any([ac.signal, AbortSignal.timeout(10_000)]) });
    if (!res.ok) throw await httpError(res);
    const body = await res.json();
    if (ac !== keysAc) return;
    ui.keys.result = { prefix, revision: body.revision, items: Array.isArray(body.items) ? body.items : [] };
    ui.keys.v++;
    ui.keys.error = '';
    ui.keys.at = Date.now();
    watchKeys(prefix, body.revision);
    want('prefixes', prefix);
    for (const kv of ui.keys.result.items.slice(0, KEYS_MAX_ROWS)) want('keys', kv.key);
  } catch (e) {
    if (ac !== keysAc) return;
    ui.keys.error = errMsg(e);
    ui.keys.result = null;
    stopKeysWatch();
  } finally {
    if (ac === keysAc) ui.keys.loading = false;
  }
  renderKeys();
}

// ---------------------------------------------------------------------------------------- render

let pending = false;
function schedule() {
  if (pending) return;
  pending = true;
  // rAF coalesces bursts into one render per frame; the timeout keeps a hidden tab current enough.
  requestAnimationFrame(flush);
  setTimeout(flush, 250);
}

function flush() {
  if (!pending) return;
  pending = false;
  render();
}

function render() {
  renderHeader();
  renderTabs();
  if (ui.view === 'services') {
    renderServices();
    renderInstances();
    renderLog($('recent-log'), log.entries.slice(0, RECENT_MAX), true);
    renderChecks();
  } else if (ui.view === 'events') {
    renderEvents();
  } else if (ui.view === 'sessions') {
    renderSessions();
  } else if (ui.view === 'keys') {
    renderKeys();
  } else if (ui.view === 'locks') {
    renderLocks();
  }
  ui.renderedLogSeq = log.seq;
  document.title = `${ui.conn === 'stale' ? '⚠ stale · ' : ''}roster · ${countServices()} services`;
}

function countServices() {
  let n = 0;
  for (const svc of model.services.values()) if (liveRecs(svc).length > 0) n++;
  return n;
}

function renderHeader() {
  setText($('server-host'), location.host);
  const conn = $('conn');
  conn.dataset.conn = ui.conn;
  const label = ui.conn === 'live' ? 'Live' : ui.conn === 'stale' ? 'Stale — reconnecting' : 'Connecting…';
  setText($('conn-label'), label);
  conn.title = ui.conn === 'stale' ? `Last error: ${ui.connError}` : ui.conn === 'live' ? `Watching ${ROOT} since ${new Date(ui.connSince).toLocaleTimeString()}` : '';
  renderTicking();

  const hs = $('stat-health');
  hs.dataset.health = ui.health.state;
  setText($('health'), ui.health.state === 'ok' ? 'healthy' : ui.health.state === 'unknown' ? '…' : ui.health.state);
  hs.title = ui.health.message || (ui.health.at ? `checked ${clock(ui.health.at)}` : '');
  // The figures come from one GET /api/v1/status: one revision, one moment (services and instances
  // only for a token that may read every service).
  const st = ui.status;
  const rev = st ? st.revision : ui.health.revision;
  setText($('revision'), rev ? String(rev) : '–');
  setText($('m-services'), fmtCount(st?.services));
  setText($('m-instances'), fmtCount(st?.instances));
  setText($('m-keys'), fmtCount(st?.keys));
  setText($('m-leases'), fmtCount(st?.sessions));
  setText($('m-watchers'), fmtCount(st?.watchers));
  $('revision').parentElement.title = st ? `figures at revision ${st.revision}; server ${st.version ?? ''} on Node ${st.node ?? ''}` : '';
  setText($('count-services'), String(countServices()));
  setText($('count-sessions'), fmtCount(st?.sessions));
  setText($('count-events'), String(hist.entries.length));
  setText($('view-rev'), model.synced ? `services/ at revision ${model.revision}` : 'loading services/…');

  const banner = $('stale-banner');
  banner.hidden = ui.conn !== 'stale';
  document.body.classList.toggle('is-stale', ui.conn === 'stale');
}

function fmtCount(n) {
  return Number.isFinite(n) ? n.toLocaleString('en-US') : '–';
}

/** The parts that change with the clock alone (called every second and on render). */
function renderTicking() {
  const age = Date.now() - ui.connSince;
  setText($('conn-age'), ui.conn === 'stale' ? `for ${fmtDuration(age)}` : '');
  if (ui.conn === 'stale') {
    const rev = model.revision ? `revision ${model.revision}` : 'nothing yet';
    setText(
      $('stale-banner'),
      `Live updates interrupted ${fmtDuration(age)} ago (${ui.connError || 'connection lost'}). Showing the last known state (${rev}); reconnecting, attempt ${ui.attempts}.`,
    );
  }
  setText($('uptime'), Number.isFinite(ui.health.uptime) ? fmtDuration(ui.health.uptime * 1000 + (ui.health.state === 'ok' ? Date.now() - ui.health.at : 0)) : '–');
  setText($('last-change'), model.lastChangeAt ? `${ago(model.lastChangeAt)} · rev ${model.lastChangeRev}` : '–');
  for (const el of document.querySelectorAll('[data-ts]')) setText(el, ago(Number(el.dataset.ts)));
  if (ui.view === 'sessions') {
    const now = performance.now();
    for (const row of $('sess-body').children) {
      const s = row._sess;
      if (!s) continue;
      const left = Math.max(0, s.deadline - now);
      setText(row.querySelector('.remaining-text'), fmtTtl(Math.round(left / 100) * 100));
      const bar = row.querySelector('.bar > span');
      if (bar) bar.style.width = `${Math.min(100, (left / s.ttl) * 100).toFixed(1)}%`;
      row.classList.toggle('is-expiring', left < Math.min(s.ttl / 3, 5000));
    }
  }
}

function renderTabs() {
  for (const name of VIEWS) {
    const tab = $(`tab-${name}`);
    const sel = name === ui.view;
    tab.setAttribute('aria-selected', String(sel));
    tab.tabIndex = sel ? 0 : -1;
    $(`view-${name}`).hidden = !sel;
  }
}

// --- filtering

function tokens(text) {
  return text.toLowerCase().split(/\s+/).filter(Boolean);
}

function matches(hay, toks) {
  for (const t of toks) if (!hay.includes(t)) return false;
  return true;
}

/** The services shown in the list, with their live records and whether the name itself matched. */
function visibleServices() {
  const out = [];
  for (const name of [...model.services.keys()].sort()) {
    const svc = model.services.get(name);
    const live = liveRecs(svc);
    const nameHit = ui.filter.length === 0 || matches(name.toLowerCase(), ui.filter);
    if (!nameHit && !live.some((r) => matches(r.hay, ui.filter))) continue;
    out.push({ name, svc, live, nameHit });
  }
  return out;
}

function selectedName(list) {
  if (ui.selected !== null) return ui.selected;
  const first = list.find((s) => s.live.length > 0);
  return first ? first.name : null;
}

// --- services list (keyed, so focus and animations survive updates)

const svcEls = new Map();

function renderServices() {
  const ul = $('svc-list');
  const list = visibleServices();
  const selected = selectedName(list);
  const keep = new Set();
  let i = 0;
  for (const s of list) {
    keep.add(s.name);
    let li = svcEls.get(s.name);
    if (!li) {
      li = h('li', { class: 'svc' });
      li._born = model.synced ? Date.now() : 0;
      if (li._born) li.classList.add('is-new');
      svcEls.set(s.name, li);
    }
    updateServiceItem(li, s, s.name === selected);
    if (ul.children[i] !== li) ul.insertBefore(li, ul.children[i] ?? null);
    i++;
  }
  for (const [name, li] of svcEls) {
    if (!keep.has(name)) {
      li.remove();
      svcEls.delete(name);
    }
  }
  const empty = $('svc-empty');
  empty.hidden = list.length > 0;
  if (list.length === 0) {
    setText(empty, !model.synced ? 'Loading…' : ui.filter.length ? 'No service matches the filter.' : 'No services registered yet.');
  }
}

function updateServiceItem(li, s, isSelected) {
  const up = s.live.filter((r) => !r.problem && r.inst.status === 'up').length;
  const draining = s.live.filter((r) => !r.problem && r.inst.status !== 'up').length;
  const invalid = s.live.filter((r) => r.problem).length;
  const critical = s.live.filter((r) => !r.problem && r.inst.health === 'critical').length;
  const zones = new Set(s.live.map((r) => r.inst?.zone).filter(Boolean));
  const sig = [s.name, s.live.length, up, draining, invalid, critical, [...zones].join(','), isSelected].join('|');
  li.classList.toggle('is-removed', s.live.length === 0);
  li.dataset.service = s.name;
  if (li._sig === sig) return;
  li._sig = sig;
  const meta = [];
  if (up) meta.push(h('span', { class: 'st-up' }, `${up} up`));
  if (draining) meta.push(h('span', { class: 'st-draining' }, `${draining} draining`));
  if (invalid) meta.push(h('span', { class: 'st-invalid' }, `${invalid} invalid`));
  if (critical) meta.push(h('span', { class: 'st-critical', title: 'instances whose health checks fail (clients set them aside)' }, `${critical} critical`));
  if (zones.size) meta.push(h('span', { class: 'zones' }, `${zones.size} zone${zones.size > 1 ? 's' : ''}`));
  if (s.live.length === 0) meta.push(h('span', null, 'removed'));
  // The link element is kept (only its content changes) so keyboard focus survives live updates.
  let a = li.firstElementChild;
  if (!a) {
    a = h('a', { href: `#/services/${encodeURIComponent(s.name)}`, class: 'svc-link' });
    li.append(a);
  }
  if (isSelected) a.setAttribute('aria-current', 'true');
  else a.removeAttribute('aria-current');
  a.setAttribute('aria-label', `${s.name}: ${s.live.length} instance${s.live.length === 1 ? '' : 's'}`);
  a.replaceChildren(
    h('span', { class: 'svc-name' }, s.name),
    h('span', { class: 'svc-count', 'aria-hidden': 'true' }, String(s.live.length)),
    h('span', { class: 'svc-meta', 'aria-hidden': 'true' }, meta),
  );
}

// --- instances of the selected service

const rowEls = new Map();

function renderInstances() {
  const list = visibleServices();
  const name = selectedName(list);
  const svc = name === null ? undefined : model.services.get(name);
  const title = $('svc-title');
  setText(title, name === null ? 'Instances' : name);
  setText($('inst-caption'), name === null ? 'Instances' : `Instances of ${name}`);
  const entry = list.find((s) => s.name === name);
  const all = svc ? [...svc.values()].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)) : [];
  // A name hit shows every instance; otherwise only the instances that match the filter.
  const shown = ui.filter.length === 0 || (entry && entry.nameHit) ? all : all.filter((r) => r.gone || matches(r.hay, ui.filter));
  const live = all.filter((r) => !r.gone);
  const liveShown = shown.filter((r) => !r.gone);
  const summary = [];
  if (svc) {
    summary.push(`${live.length} instance${live.length === 1 ? '' : 's'}`);
    if (liveShown.length !== live.length) summary.push(`${liveShown.length} match the filter`);
    const zones = new Set(live.map((r) => r.inst?.zone).filter(Boolean));
    if (zones.size) summary.push(`zones: ${[...zones].sort().join(', ')}`);
    const w = live.reduce((n, r) => n + (r.inst && r.inst.status === 'up' ? r.inst.weight : 0), 0);
    summary.push(`total weight ${w}`);
  }
  setText($('svc-summary'), summary.join(' · '));

  const tbody = $('inst-body');
  const keep = new Set();
  let i = 0;
  const now = Date.now();
  for (const rec of shown) {
    keep.add(rec.key);
    let tr = rowEls.get(rec.key);
    if (!tr) {
      tr = h('tr');
      rowEls.set(rec.key, tr);
      if (rec.born && now - rec.born < NEW_MS) tr.classList.add('is-new');
    }
    if (tr._rec !== rec || tr._pv !== perms.v) {
      const prev = tr._rec;
      if (prev && prev.gone && !rec.gone) flash(tr, 'is-new'); // came back while fading out
      else if (prev && prev !== rec && rec.updated && rec.updated !== prev.updated && !rec.gone) flash(tr, 'is-updated');
      tr._rec = rec;
      fillRow(tr, rec);
    }
    // A removed row stays for FADE_MS, fading, hidden from assistive technology.
    tr.classList.toggle('is-removed', rec.gone > 0);
    if (rec.gone) tr.setAttribute('aria-hidden', 'true');
    else tr.removeAttribute('aria-hidden');
    if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] ?? null);
    i++;
  }
  for (const [key, tr] of rowEls) {
    if (!keep.has(key)) {
      tr.remove();
      rowEls.delete(key);
    }
  }
  const empty = $('inst-empty');
  const none = liveShown.length === 0;
  empty.hidden = !none;
  if (none) {
    setText(
      empty,
      !model.synced
        ? 'Loading…'
        : name === null
          ? 'Select a service.'
          : !svc || live.length === 0
            ? `No instances of ${name} are registered.`
            : 'No instance matches the filter.',
    );
  }
}

function flash(el, cls) {
  el.classList.remove(cls);
  void el.offsetWidth; // restart the animation
  el.classList.add(cls);
}

function cell(label, ...kids) {
  return h('td', { 'data-label': label }, ...kids);
}

function fillRow(tr, rec) {
  tr.dataset.key = rec.key;
  tr.dataset.id = rec.id;
  const kv = rec.kv;
  const inst = rec.inst;
  const dash = h('span', { class: 'muted' }, '—');
  let status;
  if (rec.problem) status = h('span', { class: 'status', 'data-status': 'invalid', title: rec.problem }, h('span', { class: 'dot', 'aria-hidden': 'true' }), 'invalid');
  else status = h('span', { class: 'status', 'data-status': inst.status === 'up' ? 'up' : inst.status === 'draining' ? 'draining' : 'other' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), inst.status);

  let meta;
  if (rec.problem) {
    meta = h('span', { class: 'problem' }, `${rec.problem}: `, h('code', { title: truncate(String(kv.value), 2000) }, truncate(String(kv.value), 80)));
  } else if (inst.metadata.length === 0) {
    meta = dash.cloneNode(true);
  } else {
    meta = h(
      'ul',
      { class: 'chips' },
      inst.metadata.map(([k, v]) => h('li', { class: 'chip kv', title: `${k}=${v}` }, h('span', { class: 'k' }, k), h('span', { class: 'eq', 'aria-hidden': 'true' }, '='), h('span', { class: 'v' }, v))),
    );
  }
  const tags = inst && inst.tags.length ? h('ul', { class: 'chips' }, inst.tags.map((t) => h('li', { class: 'chip tag' }, t))) : dash.cloneNode(true);
  const sess = kv.session ? h('code', { class: 'sess', title: `session ${kv.session}` }, shortId(kv.session)) : h('span', { class: 'muted', title: 'not bound to a session: persistent' }, 'none');
  const reg = inst && inst.registeredAt ? h('span', { 'data-ts': String(inst.registeredAt), title: isoOf(inst.registeredAt) }, ago(inst.registeredAt)) : dash.cloneNode(true);
  tr.replaceChildren(
    cell('Status', status),
    cell('ID', h('code', { class: 'id', title: rec.id }, rec.id)),
    cell('Endpoint', inst && inst.address ? h('code', null, endpoint(inst)) : dash.cloneNode(true)),
    cell('Zone', inst && inst.zone ? inst.zone : dash.cloneNode(true)),
    h('td', { 'data-label': 'Weight', class: 'num' }, inst ? String(inst.weight) : '—'),
    cell('Tags', tags),
    cell('Metadata', meta),
    cell('Session', sess),
    cell('Registered', reg),
    h('td', { 'data-label': 'Rev', class: 'num', title: `created at revision ${kv.createRevision}, version ${kv.version}` }, String(kv.modRevision)),
    cell('Health', healthBadge(rec)),
    cell('Actions', instanceActions(rec)),
  );
  tr._pv = perms.v;
}

/** The instance's health (from its checks, written by the server's checker); a button opening the
 *  per-check panel. No checks: a dash. */
function healthBadge(rec) {
  const hs = rec.inst && rec.inst.health;
  if (!hs) return h('span', { class: 'muted', title: 'no health checks' }, '—');
  const open = ui.checks && ui.checks.service === rec.service && ui.checks.id === rec.id;
  return h('button', { type: 'button', class: 'health', 'data-health': hs, 'data-action': 'checks', 'aria-expanded': open ? 'true' : 'false', title: 'Show this instance’s checks' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), hs);
}

/** Drain / undrain and deregister, only when the token may write the service. */
function instanceActions(rec) {
  const access = rec.inst && !rec.problem ? (want('services', rec.service) ?? 'pending') : 'deny';
  if (access !== 'write') return h('span', { class: 'muted', 'data-access': access }, '');
  const draining = rec.inst.status === 'draining';
  return h(
    'span',
    { class: 'actions', 'data-access': access },
    h('button', { type: 'button', class: 'act', 'data-action': draining ? 'undrain' : 'drain', title: draining ? 'Set it up again: new calls may pick it' : 'Set it draining: no new calls pick it' }, draining ? 'Undrain' : 'Drain'),
    h('button', { type: 'button', class: 'act danger', 'data-action': 'deregister', title: 'Remove this instance now (its registrar does not put it back)' }, 'Deregister'),
  );
}

/** A destructive button asks once more: the first click arms it for CONFIRM_MS. */
function armed(btn, label) {
  if (btn.dataset.armed === '1') return true;
  btn.dataset.armed = '1';
  btn._label = btn.textContent;
  btn.textContent = label;
  btn.classList.add('is-armed');
  setTimeout(() => {
    if (!btn.isConnected) return;
    btn.dataset.armed = '';
    btn.textContent = btn._label;
    btn.classList.remove('is-armed');
  }, CONFIRM_MS);
  return false;
}

function say(id, text, bad) {
  const el = $(id);
  setText(el, text);
  el.dataset.kind = bad ? 'error' : 'ok';
}

async function onInstanceClick(e) {
  const btn = e.target instanceof Element ? e.target.closest('button[data-action]') : null;
  if (!btn) return;
  const tr = btn.closest('tr');
  const rec = tr && tr._rec;
  if (!rec || rec.gone) return;
  const what = `${rec.service}/${rec.id}`;
  const path = `api/v1/instances/${encodeURIComponent(rec.service)}/${encodeURIComponent(rec.id)}`;
  const action = btn.dataset.action;
  if (action === 'checks') {
    if (ui.checks && ui.checks.service === rec.service && ui.checks.id === rec.id) ui.checks = null;
    else {
      ui.checks = { service: rec.service, id: rec.id, list: null, error: '', at: 0 };
      void loadChecks();
    }
    rerenderRows();
    schedule();
    return;
  }
  if (action === 'deregister' && !armed(btn, 'Confirm deregister')) return;
  btn.disabled = true;
  try {
    if (action === 'deregister') {
      await write('DELETE', path);
      say('action-msg', `Deregistered ${what}.`);
    } else {
      const status = action === 'drain' ? 'draining' : 'up';
      await write('PATCH', path, { status });
      say('action-msg', `${what} is ${status === 'draining' ? 'draining' : 'up'}.`);
    }
  } catch (err) {
    say('action-msg', `Could not ${action} ${what}: ${errMsg(err)}`, true);
  } finally {
    btn.disabled = false;
  }
}

function rerenderRows() {
  for (const tr of rowEls.values()) tr._rec = null;
}

let checksAc;
async function loadChecks() {
  const c = ui.checks;
  if (!c) return;
  checksAc?.abort();
  const ac = (checksAc = new AbortController());
  try {
    const res = await api(url('api/v1/checks', { service: c.service }), { cache: 'no-store', headers: { accept: 'application/json' }, signal: AbortSignal.any([ac.signal, AbortSignal.timeout(8000)]) });
    if (!res.ok) throw await httpError(res);
    const body = await res.json();
    if (ui.checks !== c) return;
    c.list = (Array.isArray(body.checks) ? body.checks : []).filter((k) => k && k.instance === c.id);
    c.error = '';
    c.at = Date.now();
  } catch (e) {
    if (ui.checks !== c || ac.signal.aborted) return;
    c.error = errMsg(e);
  }
  renderChecks();
}

function renderChecks() {
  const panel = $('checks-panel');
  const c = ui.checks;
  panel.hidden = !c || ui.view !== 'services';
  if (!c) return;
  setText($('checks-title'), `Checks of ${c.service}/${c.id}`);
  const rows = (c.list ?? []).map((k) =>
    h(
      'tr',
      { 'data-check': k.id },
      cell('Check', h('code', null, k.id)),
      cell('Type', String(k.type ?? '')),
      cell('Status', h('span', { class: 'health', 'data-health': HEALTH.includes(k.status) ? k.status : 'critical' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), String(k.status))),
      cell('Output', k.output ? h('code', { class: 'output' }, truncate(String(k.output), 4096)) : h('span', { class: 'muted' }, '(none)')),
      cell('Updated', k.updatedAt ? h('span', { 'data-ts': String(k.updatedAt), title: isoOf(k.updatedAt) }, ago(k.updatedAt)) : '—'),
    ),
  );
  $('checks-body').replaceChildren(...rows);
  setText(
    $('checks-summary'),
    c.error ? `Cannot read the checks: ${c.error}` : c.list === null ? 'Loading…' : rows.length ? `${rows.length} check${rows.length === 1 ? '' : 's'} · read ${clock(c.at)}` : 'The server runs no check for this instance.',
  );
}

// --- event log

function renderLog(ol, entries, compact) {
  const items = entries.map((e) => {
    const li = h(
      'li',
      { class: `entry t-${e.type}`, 'data-type': e.type },
      h('time', { datetime: isoOf(e.at), title: isoOf(e.at) }, clock(e.at)),
      h('span', { class: 'rev' }, e.rev ? `#${e.rev}` : ''),
      h('span', { class: 'type' }, e.type),
      e.key ? keyLink(e.key, compact) : h('span', { class: 'key' }),
      e.detail ? h('span', { class: 'detail' }, e.detail) : null,
    );
    if (e.seq > ui.renderedLogSeq && ui.renderedLogSeq > 0) li.classList.add('is-new');
    return li;
  });
  ol.replaceChildren(...items);
  if (items.length === 0) ol.append(h('li', { class: 'entry muted' }, model.synced ? 'No changes yet.' : 'Waiting for the first snapshot…'));
}

function keyLink(key, compact) {
  const rest = key.startsWith(ROOT) ? key.slice(ROOT.length) : '';
  const slash = rest.indexOf('/');
  const text = compact && rest ? rest : key;
  if (slash > 0) return h('a', { class: 'key', href: `#/services/${encodeURIComponent(rest.slice(0, slash))}` }, text);
  return h('span', { class: 'key' }, text);
}

function renderEvents() {
  renderHistory();
  const shown = ui.eventsFilter.length ? log.entries.filter((e) => matches(`${e.type}\n${e.key}\n${e.detail}\n${e.rev ?? ''}`.toLowerCase(), ui.eventsFilter)) : log.entries;
  renderLog($('events-log'), shown, false);
  setText(
    $('events-summary'),
    `${shown.length} of the last ${log.entries.length} changes under ${ROOT} seen by this page (keeps ${LOG_MAX}), newest first.`,
  );
}

// --- sessions

function renderSessions() {
  const tbody = $('sess-body');
  const s = ui.sessions;
  const byS = new Map();
  for (const svc of model.services.values()) {
    for (const rec of svc.values()) {
      if (rec.gone || !rec.kv.session) continue;
      let arr = byS.get(rec.kv.session);
      if (!arr) byS.set(rec.kv.session, (arr = []));
      arr.push(rec);
    }
  }
  const rows = s.list.map((sess) => {
    const recs = (byS.get(sess.id) ?? []).sort((a, b) => (a.key < b.key ? -1 : 1));
    const chips = recs.slice(0, 6).map((r) => h('li', { class: 'chip' }, h('a', { href: `#/services/${encodeURIComponent(r.service)}` }, `${r.service}/${r.id}`)));
    if (recs.length > 6) chips.push(h('li', { class: 'chip more' }, `+${recs.length - 6} more`));
    const tr = h(
      'tr',
      { 'data-session': sess.id },
      cell('Session', h('code', null, sess.id)),
      h('td', { 'data-label': 'TTL', class: 'num' }, fmtTtl(sess.ttl)),
      cell('Remaining', h('span', { class: 'remaining' }, h('span', { class: 'bar', 'aria-hidden': 'true' }, h('span')), h('span', { class: 'remaining-text' }, fmtTtl(sess.remaining)))),
      h('td', { 'data-label': 'Keys', class: 'num' }, String(sess.keys)),
      cell('Instances', chips.length ? h('ul', { class: 'chips' }, chips) : h('span', { class: 'muted' }, 'none under services/')),
    );
    tr._sess = sess;
    return tr;
  });
  tbody.replaceChildren(...rows);
  const empty = $('sess-empty');
  empty.hidden = rows.length > 0 && !s.error;
  if (s.error) setText(empty, `Cannot list sessions: ${s.error}`);
  else if (rows.length === 0) setText(empty, s.at ? 'No live sessions.' : 'Loading…');
  setText($('sess-summary'), s.at ? `${s.list.length} live session${s.list.length === 1 ? '' : 's'} · refreshed ${clock(s.at)}; remaining time counts down between refreshes` : '');
  renderTicking();
}

// --- keys browser

function renderKeys() {
  const k = ui.keys;
  const input = /** @type {HTMLInputElement} */ ($('keys-prefix'));
  if (document.activeElement !== input) input.value = k.prefix;

  // Breadcrumbs: each '/'-terminated level of the prefix.
  const crumbs = [h('a', { href: keysHref('') }, '(all)')];
  const segs = k.prefix.split('/');
  let acc = '';
  for (let i = 0; i < segs.length; i++) {
    const seg = segs[i];
    if (seg === '') continue;
    const last = i === segs.length - 1;
    acc += last ? seg : `${seg}/`;
    crumbs.push(h('span', { class: 'sep', 'aria-hidden': 'true' }, '/'), h('a', { href: keysHref(acc), 'aria-current': last || (i === segs.length - 2 && segs[i + 1] === '') ? 'page' : null }, seg));
  }
  $('keys-crumbs').replaceChildren(...crumbs);

  const tbody = $('keys-body');
  const dirs = $('keys-dirs');
  if (k.loading && !k.result) {
    setText($('keys-summary'), 'Loading…');
    return;
  }
  if (k.error) {
    setText($('keys-summary'), `Cannot list keys: ${k.error}`);
    tbody.replaceChildren();
    tbody._sig = '';
    dirs.replaceChildren();
    return;
  }
  if (!k.result) return;
  const { items, revision, prefix } = k.result;
  // Sub-prefixes one level below the last '/' of the prefix, with key counts.
  const base = prefix.slice(0, prefix.lastIndexOf('/') + 1);
  const sub = new Map();
  for (const kv of items) {
    const rest = kv.key.slice(base.length);
    const slash = rest.indexOf('/');
    if (slash > 0) sub.set(rest.slice(0, slash), (sub.get(rest.slice(0, slash)) ?? 0) + 1);
  }
  dirs.replaceChildren(
    ...[...sub].map(([name, n]) => h('li', null, h('a', { class: 'chip dir', href: keysHref(`${base}${name}/`) }, `${name}/`, h('span', { class: 'n' }, String(n))))),
  );
  setText(
    $('keys-summary'),
    `${items.length} key${items.length === 1 ? '' : 's'} under ${prefix === '' ? 'the root' : `“${prefix}”`} at revision ${revision}${items.length > KEYS_MAX_ROWS ? `; showing the first ${KEYS_MAX_ROWS}` : ''} · ${k.live ? 'live' : `read ${clock(k.at)} · reconnecting…`}${k.loading ? ' · refreshing…' : ''}`,
  );
  $('keys-summary').dataset.live = k.live ? 'true' : 'false';
  $('keys-new').hidden = want('prefixes', prefix) !== 'write';
  if (k.editing && !items.some((kv) => kv.key === k.editing.key)) k.editing = null;
  // Rows are rebuilt only when the keys, the permissions or the editor changed (not on every render:
  // an expanded value stays expanded).
  const sig = `${k.v}:${perms.v}:${k.editing ? k.editing.key : ''}`;
  if (tbody._sig === sig) return;
  tbody._sig = sig;
  tbody.replaceChildren(
    ...items.slice(0, KEYS_MAX_ROWS).map((kv) => {
      const editing = k.editing && k.editing.key === kv.key ? k.editing : null;
      const tr = h(
        'tr',
        { 'data-key': kv.key },
        cell('Key', h('code', { class: 'key' }, kv.key)),
        cell('Value', editing ? editing.el : valueView(String(kv.value))),
        h('td', { 'data-label': 'Ver', class: 'num' }, String(kv.version)),
        h('td', { 'data-label': 'Created', class: 'num' }, String(kv.createRevision)),
        h('td', { 'data-label': 'Modified', class: 'num' }, String(kv.modRevision)),
        cell('Session', kv.session ? h('code', { title: kv.session }, shortId(kv.session)) : h('span', { class: 'muted' }, 'none')),
        cell('Actions', keyActions(kv, editing)),
      );
      tr._kv = kv;
      return tr;
    }),
  );
}

function keyActions(kv, editing) {
  const access = want('keys', kv.key) ?? 'pending';
  if (access !== 'write') return h('span', { class: 'muted', 'data-access': access }, '');
  if (editing) {
    return h(
      'span',
      { class: 'actions', 'data-access': access },
      h('button', { type: 'button', class: 'act primary', 'data-action': 'save' }, 'Save'),
      h('button', { type: 'button', class: 'act', 'data-action': 'cancel' }, 'Cancel'),
    );
  }
  return h(
    'span',
    { class: 'actions', 'data-access': access },
    h('button', { type: 'button', class: 'act', 'data-action': 'edit' }, 'Edit'),
    h('button', { type: 'button', class: 'act danger', 'data-action': 'delete' }, 'Delete'),
  );
}

async function onKeysClick(e) {
  const btn = e.target instanceof Element ? e.target.closest('button[data-action]') : null;
  if (!btn) return;
  const tr = btn.closest('tr');
  const kv = tr && tr._kv;
  if (!kv) return;
  const k = ui.keys;
  const action = btn.dataset.action;
  if (action === 'edit') {
    const ta = h('textarea', { class: 'value-edit', rows: '4', spellcheck: 'false', 'aria-label': `New value of ${kv.key}` });
    ta.value = String(kv.value);
    // The version read: the save is a compare-and-set on it (a change meanwhile is a conflict, shown).
    k.editing = { key: kv.key, version: kv.version, session: kv.session, el: ta };
    renderKeys();
    ta.focus();
    return;
  }
  if (action === 'cancel') {
    k.editing = null;
    renderKeys();
    return;
  }
  if (action === 'delete' && !armed(btn, 'Confirm delete')) return;
  btn.disabled = true;
  try {
    if (action === 'save') {
      const ed = k.editing;
      if (!ed) return;
      await write('PUT', keyPath(ed.key), { value: ed.el.value, ifVersion: ed.version, ...(ed.session ? { session: ed.session } : {}) });
      k.editing = null;
      say('keys-msg', `Saved ${ed.key}.`);
    } else if (action === 'delete') {
      await write('DELETE', keyPath(kv.key), undefined, { ifVersion: String(kv.version) });
      say('keys-msg', `Deleted ${kv.key}.`);
    }
  } catch (err) {
    say('keys-msg', `Could not ${action} ${kv.key}: ${errMsg(err)}`, true);
  } finally {
    btn.disabled = false;
  }
  renderKeys();
}

async function onNewKey(e) {
  e.preventDefault();
  const key = /** @type {HTMLInputElement} */ ($('keys-new-key')).value.trim();
  const value = /** @type {HTMLTextAreaElement} */ ($('keys-new-value')).value;
  if (!key) return;
  try {
    // Create only: an existing key is a conflict, not an overwrite.
    await write('PUT', keyPath(key), { value, ifAbsent: true });
    say('keys-msg', `Created ${key}.`);
    /** @type {HTMLInputElement} */ ($('keys-new-key')).value = '';
    /** @type {HTMLTextAreaElement} */ ($('keys-new-value')).value = '';
  } catch (err) {
    say('keys-msg', `Could not create ${key}: ${errMsg(err)}`, true);
  }
}

// --- the Keys view is live: a watch of its prefix from the revision it listed

let keysWatch;
function watchKeys(prefix, revision) {
  stopKeysWatch();
  const w = new WatchStream(
    prefix,
    {
      onOpen() {
        if (keysWatch !== w) return;
        ui.keys.live = true;
        schedule();
      },
      onDown() {
        if (keysWatch !== w) return;
        ui.keys.live = false;
        schedule();
      },
      onEvent(ev) {
        if (keysWatch !== w || !ui.keys.result) return;
        applyKeysEvent(ui.keys.result, ev);
        schedule();
      },
    },
    revision,
  );
  keysWatch = w;
  w.start();
}

function stopKeysWatch() {
  keysWatch?.stop();
  keysWatch = undefined;
  ui.keys.live = false;
}

function applyKeysEvent(r, ev) {
  const d = JSON.parse(ev.data);
  ui.keys.v++;
  if (ev.type === 'snapshot' || ev.type === 'reset') {
    r.items = Array.isArray(d.items) ? d.items.slice() : [];
    r.revision = Math.max(r.revision, Number(d.revision) || 0);
  } else if (ev.type === 'synced') {
    r.revision = Math.max(r.revision, Number(d.revision) || 0);
  } else if (ev.type === 'put' && d.kv) {
    const i = r.items.findIndex((kv) => kv.key >= d.kv.key);
    if (i >= 0 && r.items[i].key === d.kv.key) r.items[i] = d.kv;
    else r.items.splice(i < 0 ? r.items.length : i, 0, d.kv);
    r.revision = Math.max(r.revision, d.revision);
    want('keys', d.kv.key);
  } else if (ev.type === 'delete') {
    r.items = r.items.filter((kv) => kv.key !== d.key);
    r.revision = Math.max(r.revision, d.revision);
  }
}

// --- locks and elections

let locksAc;
async function loadLocks() {
  if (ui.view !== 'locks') return;
  locksAc?.abort();
  const ac = (locksAc = new AbortController());
  try {
    const res = await api(url('api/v1/locks'), { cache: 'no-store', headers: { accept: 'application/json' }, signal: AbortSignal.any([ac.signal, AbortSignal.timeout(8000)]) });
    if (!res.ok) throw await httpError(res);
    const body = await res.json();
    if (ac !== locksAc) return;
    ui.locks = { locks: Array.isArray(body.locks) ? body.locks : [], elections: Array.isArray(body.elections) ? body.elections : [], revision: body.revision, at: Date.now(), error: '' };
  } catch (e) {
    if (ac !== locksAc) return;
    ui.locks.error = errMsg(e);
  }
  renderLocks();
}

function who(p) {
  return p && p.session ? h('code', { title: `session ${p.session} · key ${p.key}` }, shortId(p.session)) : h('code', { title: p ? p.key : '' }, p ? p.key.slice(p.key.lastIndexOf('/') + 1) : '—');
}

function waitersCell(list) {
  if (!list || list.length === 0) return h('span', { class: 'muted' }, 'none');
  return h('ol', { class: 'chips waiters' }, list.map((p) => h('li', { class: 'chip', title: `session ${p.session ?? '-'} · key ${p.key} · in line since revision ${p.createRevision}` }, p.session ? shortId(p.session) : p.key)));
}

function renderLocks() {
  const L = ui.locks;
  $('locks-body').replaceChildren(
    ...L.locks.map((l) =>
      h(
        'tr',
        { 'data-lock': l.name },
        cell('Lock', h('code', null, l.name)),
        cell('Holder', who(l.holder)),
        h('td', { 'data-label': 'Fencing token', class: 'num' }, String(l.holder?.createRevision ?? '—')),
        cell('Value', l.holder && l.holder.value ? h('code', null, truncate(String(l.holder.value), 80)) : h('span', { class: 'muted' }, '—')),
        cell('Waiters', waitersCell(l.waiters)),
      ),
    ),
  );
  $('elections-body').replaceChildren(
    ...L.elections.map((l) =>
      h(
        'tr',
        { 'data-election': l.name },
        cell('Election', h('code', null, l.name)),
        cell('Leader', who(l.holder)),
        h('td', { 'data-label': 'Term', class: 'num' }, String(l.holder?.createRevision ?? '—')),
        cell('Value', l.holder && l.holder.value ? h('code', null, truncate(String(l.holder.value), 80)) : h('span', { class: 'muted' }, '—')),
        cell('Candidates', waitersCell(l.waiters)),
      ),
    ),
  );
  $('locks-empty').hidden = L.locks.length > 0 || !L.at;
  $('elections-empty').hidden = L.elections.length > 0 || !L.at;
  setText(
    $('locks-summary'),
    L.error
      ? `Cannot read locks: ${L.error}`
      : L.at
        ? `${L.locks.length} lock${L.locks.length === 1 ? '' : 's'} held, ${L.elections.length} election${L.elections.length === 1 ? '' : 's'} with a leader · at revision ${L.revision} · updated ${clock(L.at)} on the server's events`
        : 'Loading…',
  );
}

// --- the server's event history (what happened before this page opened, too)

const hist = { epoch: '', next: 0, entries: [], error: '', ok: false, truncated: false, restarts: 0 };

async function historyLoop() {
  for (;;) {
    if (loginNeeded) {
      await sleep(1000);
      continue;
    }
    try {
      const params = { after: String(hist.next), limit: '1000' };
      if (hist.ok) params.wait = '30s';
      if (hist.epoch) params.epoch = hist.epoch;
      const body = await getJson('api/v1/events', params, 40_000);
      if (hist.epoch && body.epoch !== hist.epoch) {
        // A restarted server: its history starts over (its first event says so).
        hist.entries = [];
        hist.restarts++;
      }
      hist.epoch = body.epoch;
      hist.next = body.next;
      hist.truncated = hist.truncated || body.truncated === true;
      hist.ok = true;
      hist.error = '';
      const events = Array.isArray(body.events) ? body.events : [];
      for (const e of events) hist.entries.unshift(e);
      if (hist.entries.length > HISTORY_MAX) hist.entries.length = HISTORY_MAX;
      if (events.length) onServerEvents(events);
      schedule();
    } catch (e) {
      hist.ok = false;
      hist.error = errMsg(e);
      schedule();
      await sleep(jitter(3000));
    }
  }
}

function onServerEvents(events) {
  statusSoon();
  if (ui.view === 'locks' && events.some((e) => /^(lock|leader|election)\.|^session\.expired$/.test(String(e.type)))) void loadLocks();
}

function renderHistory() {
  const f = ui.eventsFilter;
  const shown = f.length ? hist.entries.filter((e) => matches(`${e.type}\n${e.message}\n${e.key ?? ''}\n${e.service ?? ''}\n${e.instance ?? ''}`.toLowerCase(), f)) : hist.entries;
  const items = shown.map((e) =>
    h(
      'li',
      { class: `entry h-${String(e.type).replace(/[^a-z]/g, '-')}`, 'data-type': e.type, 'data-seq': String(e.seq) },
      h('time', { datetime: isoOf(e.at), title: isoOf(e.at) }, clock(e.at)),
      h('span', { class: 'rev' }, e.revision ? `#${e.revision}` : ''),
      h('span', { class: 'type' }, e.type),
      h('span', { class: 'detail' }, e.message),
    ),
  );
  if (items.length === 0) items.push(h('li', { class: 'entry muted' }, hist.ok ? 'Nothing recorded yet.' : 'Loading…'));
  $('history-log').replaceChildren(...items);
  setText(
    $('history-summary'),
    hist.error && !hist.ok
      ? `Cannot read the server's history: ${hist.error}`
      : `${shown.length} of ${hist.entries.length} events kept by the server since it started (newest first)${hist.truncated ? '; older ones were dropped' : ''}${hist.restarts ? '; the server restarted while this page was open: its history starts over' : ''}.`,
  );
}

// --- what the token may do (POST /api/v1/acl/check), asked once per name, in batches

const perms = { v: 0, services: new Map(), keys: new Map(), prefixes: new Map(), asked: { services: new Set(), keys: new Set(), prefixes: new Set() }, timer: undefined };

/** The token's access to a service / key / prefix if known; asks for it otherwise (undefined). */
function want(kind, name) {
  const known = perms[kind].get(name);
  if (known !== undefined) return known;
  if (kind === 'services' && !SERVICE_RE.test(name)) return 'deny';
  perms.asked[kind].add(name);
  if (!perms.timer) perms.timer = setTimeout(askPerms, 20);
  return undefined;
}

async function askPerms() {
  perms.timer = undefined;
  if (loginNeeded) return; // asked again after the sign-in reloads the page
  const take = (kind) => {
    const list = [...perms.asked[kind]].slice(0, 1000);
    for (const n of list) perms.asked[kind].delete(n);
    return list;
  };
  const q = { services: take('services'), keys: take('keys'), prefixes: take('prefixes') };
  let answer;
  try {
    answer = await write('POST', 'api/v1/acl/check', q);
  } catch (e) {
    console.warn('roster: cannot ask what this token may do; write buttons stay hidden', e);
    answer = null;
  }
  for (const kind of ['services', 'keys', 'prefixes']) {
    for (const n of q[kind]) perms[kind].set(n, (answer && answer[kind] && answer[kind][n]) || 'deny');
  }
  perms.v++;
  if (perms.asked.services.size + perms.asked.keys.size + perms.asked.prefixes.size > 0) perms.timer = setTimeout(askPerms, 20);
  schedule();
}

function valueView(v) {
  if (v === '') return h('span', { class: 'muted' }, '(empty)');
  let pretty = null;
  try {
    const o = JSON.parse(v);
    if (o && typeof o === 'object') pretty = JSON.stringify(o, null, 2);
  } catch {
    pretty = null;
  }
  const oneLine = v.replace(/\s+/g, ' ');
  if (pretty === null && oneLine.length <= 100) return h('code', { class: 'value' }, oneLine);
  return h(
    'details',
    { class: 'value' },
    h('summary', null, h('code', null, truncate(oneLine, 100))),
    h('pre', null, truncate(pretty ?? v, 64 * 1024)),
  );
}

function keysHref(prefix) {
  return prefix === '' ? '#/keys' : `#/keys?prefix=${encodeURIComponent(prefix)}`;
}

// ---------------------------------------------------------------------------------------- routing

const VIEWS = ['services', 'sessions', 'keys', 'locks', 'events'];

function route() {
  const raw = location.hash.replace(/^#\/?/, '');
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  const params = new URLSearchParams(q < 0 ? '' : raw.slice(q + 1));
  const slash = path.indexOf('/');
  const view = slash < 0 ? path : path.slice(0, slash);
  const prevView = ui.view;
  ui.view = VIEWS.includes(view) ? view : 'services';
  if (ui.view === 'services') {
    let sel = null;
    if (slash >= 0 && path.length > slash + 1) {
      try {
        sel = decodeURIComponent(path.slice(slash + 1));
      } catch {
        sel = null;
      }
    }
    ui.selected = sel;
  }
  if (ui.view === 'keys') {
    const prefix = params.get('prefix') ?? '';
    if (prefix !== ui.keys.prefix || !ui.keys.result || prevView !== 'keys') {
      ui.keys.prefix = prefix;
      void loadKeys();
    }
  }
  if (ui.view !== 'keys' && prevView === 'keys') {
    stopKeysWatch();
    ui.keys.result = null;
    ui.keys.editing = null;
  }
  if (ui.view === 'locks' && prevView !== 'locks') void loadLocks();
  // The checks panel belongs to an instance of the selected service.
  if (ui.checks && ui.selected !== null && ui.selected !== ui.checks.service) ui.checks = null;
  if (ui.view === 'sessions' && (prevView !== 'sessions' || !ui.sessions.at)) void pollSessions();
  if (ui.view === 'events' && prevView !== 'events') ui.renderedLogSeq = log.seq; // no flash for history
  render();
}

function onTabKey(e) {
  const i = VIEWS.indexOf(ui.view);
  let next;
  if (e.key === 'ArrowRight') next = VIEWS[(i + 1) % VIEWS.length];
  else if (e.key === 'ArrowLeft') next = VIEWS[(i + VIEWS.length - 1) % VIEWS.length];
  else if (e.key === 'Home') next = VIEWS[0];
  else if (e.key === 'End') next = VIEWS[VIEWS.length - 1];
  else return;
  e.preventDefault();
  $(`tab-${next}`).focus();
  location.hash = `#/${next}`;
}

// ------------------------------------------------------------------------------------------- init

function init() {
  $('login').addEventListener('submit', (e) => {
    e.preventDefault();
    const t = /** @type {HTMLInputElement} */ ($('login-token')).value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    location.reload(); // every stream and poll starts over with the token
  });
  $('signout').hidden = !savedToken();
  $('signout').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_KEY);
    location.reload();
  });
  let filterTimer;
  $('filter').addEventListener('input', (e) => {
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => {
      ui.filter = tokens(/** @type {HTMLInputElement} */ (e.target).value);
      schedule();
    }, 80);
  });
  $('events-filter').addEventListener('input', (e) => {
    ui.eventsFilter = tokens(/** @type {HTMLInputElement} */ (e.target).value);
    schedule();
  });
  $('keys-form').addEventListener('submit', (e) => {
    e.preventDefault();
    const prefix = /** @type {HTMLInputElement} */ ($('keys-prefix')).value.trim();
    const href = keysHref(prefix);
    if (location.hash === href) void loadKeys();
    else location.hash = href;
  });
  $('tablist').addEventListener('keydown', onTabKey);
  $('inst-body').addEventListener('click', (e) => void onInstanceClick(e));
  $('keys-body').addEventListener('click', (e) => void onKeysClick(e));
  $('keys-new').addEventListener('submit', (e) => void onNewKey(e));
  $('checks-refresh').addEventListener('click', () => void loadChecks());
  $('checks-close').addEventListener('click', () => {
    ui.checks = null;
    rerenderRows();
    schedule();
  });
  window.addEventListener('hashchange', route);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') {
      void pollHealth();
      if (ui.view === 'sessions') void pollSessions();
      schedule();
    }
  });
  setInterval(renderTicking, 1000);
  if (!location.hash) history.replaceState(null, '', '#/services');
  route();
  stream.start();
  void pollHealth();
  historyLoop().catch((e) => console.error('roster: history loop failed', e));
}

init();
