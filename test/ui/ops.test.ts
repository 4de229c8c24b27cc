/**
 * The dashboard as an operator acts from it (issue 13 item 6, issue 14's dashboard parts), in a real
 * headless Chromium against a real server with auth on (test/security/helpers.ts: admin, writer,
 * reader tokens):
 * - the admin drains and deregisters an instance from the Services view; the registry changes, the
 *   row follows by watch; every write carries X-Roster-Request and the token;
 * - the admin edits, deletes and creates KV entries; an edit of a key changed meanwhile is refused
 *   (compare-and-set) and says so;
 * - the Keys view is live: a key written elsewhere appears without a reload and without any further
 *   GET /api/v1/keys (a watch, not polling);
 * - a reader's token shows no write button anywhere, and the server refuses the same writes sent
 *   from the page anyway (403);
 * - the Locks view shows holder, fencing token and waiters, and follows a release;
 * - the server's event history shows what happened before the page opened;
 * - the header's figures equal GET /api/v1/status;
 * - health: a badge per instance with checks, and the per-check panel with status and output,
 *   following a TTL check's pass and fail.
 *
 * Screenshots go to $ROSTER_UI_ARTIFACTS or <tmpdir>/roster-ui-artifacts (printed at the end).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { RemoteBackend } from '../../src/backends/remote/backend.js';
import { Registrar } from '../../src/registry/registrar.js';
import { Election, lock } from '../../src/recipes/index.js';
import { secureWorld, type World } from '../security/helpers.js';

const ARTIFACTS = process.env.ROSTER_UI_ARTIFACTS ?? join(tmpdir(), 'roster-ui-artifacts');
const SHOW_MS = 10_000;

describe('dashboard operator actions (auth on, headless Chromium)', () => {
  let w: World;
  let browser: Browser;
  let backend: RemoteBackend; // admin's client
  let registrar: Registrar;
  const shots: string[] = [];
  const pageErrors: string[] = [];
  const writes: { method: string; path: string; marker: string | undefined; auth: string | undefined }[] = [];
  const keyLists: string[] = [];

  async function open(token: string, hash: string): Promise<{ ctx: BrowserContext; page: Page }> {
    const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await ctx.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (r.method() !== 'GET' && u.pathname.startsWith('/api/') && u.pathname !== '/api/v1/acl/check') {
        writes.push({ method: r.method(), path: u.pathname, marker: r.headers()['x-roster-request'], auth: r.headers().authorization });
      }
      if (r.method() === 'GET' && u.pathname === '/api/v1/keys') keyLists.push(u.search);
    });
    // The token where the sign-in form stores it (this tab's sessionStorage), before the page runs.
    await ctx.addInitScript((t) => sessionStorage.setItem('roster.token', t), token);
    await page.goto(`${w.url}/ui/${hash}`);
    await page.waitForSelector('#conn[data-conn="live"]', { timeout: SHOW_MS });
    expect(await page.isHidden('#login')).toBe(true);
    return { ctx, page };
  }

  async function shot(page: Page, name: string): Promise<void> {
    const path = join(ARTIFACTS, `${name}.png`);
    await page.screenshot({ path, fullPage: false });
    shots.push(path);
  }

  const row = (id: string) => `#inst-body tr[data-id="${id}"]:not(.is-removed)`;

  beforeAll(async () => {
    await mkdir(ARTIFACTS, { recursive: true });
    w = await secureWorld({ heartbeatMs: 1000 });
    backend = await RemoteBackend.open(w.url, { token: w.tokens.admin!, keepProcessAlive: false });
    registrar = new Registrar(backend, { ttl: 30_000, keepProcessAlive: false });
    // Before any page opens: the history must show these later.
    await registrar.register({ service: 'orders', id: 'o-1', address: '10.0.0.1', port: 8080 });
    await registrar.register({ service: 'orders', id: 'o-2', address: '10.0.0.2', port: 8080 });
    await registrar.register({ service: 'orders', id: 'o-gone', address: '10.0.0.9', port: 8080 });
    await registrar.deregister({ service: 'orders', id: 'o-gone' });
    await backend.put('config/app/color', 'blue');
    await backend.put('config/app/size', '10');
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await registrar?.close().catch(() => undefined);
    await backend?.close();
    await w?.close();
    if (shots.length) console.log(`dashboard (operator) screenshots:\n  ${shots.join('\n  ')}`);
  });

  it('shows the server history of what happened before the page opened, and header figures equal to /api/v1/status', async () => {
    const { ctx, page } = await open(w.tokens.admin!, '#/events');
    await page.waitForFunction(
      () => {
        const t = Array.from(document.querySelectorAll('#history-log .entry')).map((e) => e.getAttribute('data-type') + ' ' + e.textContent);
        return t.some((x) => /^instance\.registered .*o-1/.test(x)) && t.some((x) => /^instance\.deregistered .*o-gone/.test(x));
      },
      null,
      { timeout: SHOW_MS },
    );
    // Header: one /api/v1/status answer. Nothing changes meanwhile, so the figures must match.
    const st = (await w.as('admin', 'GET', '/api/v1/status')).json as { revision: number; services: number; instances: number; sessions: number; keys: number };
    await page.waitForFunction((rev) => document.getElementById('revision')?.textContent === String(rev), st.revision, { timeout: SHOW_MS });
    const hdr = await page.evaluate(() => Object.fromEntries(['m-services', 'm-instances', 'm-leases', 'm-keys'].map((id) => [id, document.getElementById(id)?.textContent])));
    expect(hdr).toEqual({ 'm-services': String(st.services), 'm-instances': String(st.instances), 'm-leases': String(st.sessions), 'm-keys': String(st.keys) });
    await shot(page, 'ops-history');
    await ctx.close();
  });

  it('drains and deregisters an instance (admin); the registry changes and the page follows', async () => {
    const { ctx, page } = await open(w.tokens.admin!, '#/services/orders');
    await page.waitForSelector(`${row('o-1')} button[data-action="drain"]`, { timeout: SHOW_MS });
    await page.click(`${row('o-1')} button[data-action="drain"]`);
    await page.waitForFunction(() => document.querySelector('#inst-body tr[data-id="o-1"] .status')?.textContent === 'draining', null, { timeout: SHOW_MS });
    expect(JSON.parse((await backend.get('services/orders/o-1'))!.value).status).toBe('draining');
    await page.waitForSelector(`${row('o-1')} button[data-action="undrain"]`, { timeout: SHOW_MS });
    await shot(page, 'ops-drained');
    // Deregister asks once more.
    await page.click(`${row('o-2')} button[data-action="deregister"]`);
    expect(await backend.get('services/orders/o-2')).toBeDefined();
    await page.waitForSelector(`${row('o-2')} button.is-armed`, { timeout: SHOW_MS });
    await page.click(`${row('o-2')} button[data-action="deregister"]`);
    await page.waitForSelector(row('o-2'), { state: 'detached', timeout: SHOW_MS });
    expect(await backend.get('services/orders/o-2')).toBeUndefined();
    expect(await page.textContent('#action-msg')).toBe('Deregistered orders/o-2.');
    // Each write carried the CSRF marker and the token.
    const mine = writes.filter((x) => x.path.startsWith('/api/v1/instances/'));
    expect(mine.map((x) => x.method).sort()).toEqual(['DELETE', 'PATCH']);
    for (const x of mine) {
      expect(x.marker).toBe('1');
      expect(x.auth).toBe(`Bearer ${w.tokens.admin}`);
    }
    await ctx.close();
  });

  it('the Keys view is live (a watch, no polling) and KV entries are edited, deleted and created (admin)', async () => {
    const { ctx, page } = await open(w.tokens.admin!, '#/keys?prefix=config%2F');
    await page.waitForSelector('#keys-body tr[data-key="config/app/color"] button[data-action="edit"]', { timeout: SHOW_MS });
    await page.waitForSelector('#keys-summary[data-live="true"]', { timeout: SHOW_MS });
    const listsBefore = keyLists.length;
    // Written elsewhere: appears, then changes, then goes, without a reload or another listing.
    await backend.put('config/app/new', 'fresh');
    await page.waitForSelector('#keys-body tr[data-key="config/app/new"]', { timeout: SHOW_MS });
    await backend.put('config/app/new', 'fresher');
    await page.waitForFunction(() => document.querySelector('#keys-body tr[data-key="config/app/new"] td:nth-child(2)')?.textContent === 'fresher', null, { timeout: SHOW_MS });
    await backend.delete('config/app/new');
    await page.waitForSelector('#keys-body tr[data-key="config/app/new"]', { state: 'detached', timeout: SHOW_MS });
    expect(keyLists.length).toBe(listsBefore);

    // Edit.
    await page.click('#keys-body tr[data-key="config/app/color"] button[data-action="edit"]');
    await page.fill('#keys-body tr[data-key="config/app/color"] textarea', 'green');
    await shot(page, 'ops-kv-edit');
    await page.click('#keys-body tr[data-key="config/app/color"] button[data-action="save"]');
    await page.waitForFunction(() => document.querySelector('#keys-body tr[data-key="config/app/color"] td:nth-child(2)')?.textContent === 'green', null, { timeout: SHOW_MS });
    expect((await backend.get('config/app/color'))!.value).toBe('green');

    // An edit of a key changed meanwhile is refused (compare-and-set on the version read).
    await page.click('#keys-body tr[data-key="config/app/size"] button[data-action="edit"]');
    await page.fill('#keys-body tr[data-key="config/app/size"] textarea', '20');
    await backend.put('config/app/size', '11');
    await page.click('#keys-body tr[data-key="config/app/size"] button[data-action="save"]');
    await page.waitForFunction(() => /Could not save config\/app\/size: CONFLICT/.test(document.getElementById('keys-msg')?.textContent ?? ''), null, { timeout: SHOW_MS });
    expect((await backend.get('config/app/size'))!.value).toBe('11');
    await page.click('#keys-body tr[data-key="config/app/size"] button[data-action="cancel"]');

    // Delete (asks once more).
    await page.click('#keys-body tr[data-key="config/app/size"] button[data-action="delete"]');
    await page.click('#keys-body tr[data-key="config/app/size"] button[data-action="delete"]');
    await page.waitForSelector('#keys-body tr[data-key="config/app/size"]', { state: 'detached', timeout: SHOW_MS });
    expect(await backend.get('config/app/size')).toBeUndefined();

    // Create; creating an existing key is a conflict, not an overwrite.
    await page.fill('#keys-new-key', 'config/app/made');
    await page.fill('#keys-new-value', 'by hand');
    await page.click('#keys-new button[type="submit"]');
    await page.waitForSelector('#keys-body tr[data-key="config/app/made"]', { timeout: SHOW_MS });
    expect((await backend.get('config/app/made'))!.value).toBe('by hand');
    await page.fill('#keys-new-key', 'config/app/made');
    await page.fill('#keys-new-value', 'again');
    await page.click('#keys-new button[type="submit"]');
    await page.waitForFunction(() => /Could not create config\/app\/made/.test(document.getElementById('keys-msg')?.textContent ?? ''), null, { timeout: SHOW_MS });
    expect((await backend.get('config/app/made'))!.value).toBe('by hand');
    for (const x of writes.filter((x) => x.path.startsWith('/api/v1/keys/'))) expect(x.marker).toBe('1');
    await shot(page, 'ops-kv');
    await ctx.close();
  });

  it("a reader's token shows no write button, and the server refuses the writes anyway", async () => {
    const { ctx, page } = await open(w.tokens.reader!, '#/services/orders');
    await page.waitForSelector(row('o-1'), { timeout: SHOW_MS });
    // The permission answer has arrived (data-access says what the server answered: read).
    await page.waitForSelector(`${row('o-1')} td[data-label="Actions"] [data-access="read"]`, { state: 'attached', timeout: SHOW_MS });
    const acl = (await w.as('reader', 'POST', '/api/v1/acl/check', { services: ['orders'] })).json as { services: Record<string, string> };
    expect(acl.services.orders).toBe('read');
    expect(await page.$$('#inst-body button[data-action="drain"], #inst-body button[data-action="deregister"]')).toHaveLength(0);
    await page.goto(`${w.url}/ui/#/keys?prefix=config%2F`);
    await page.waitForSelector('#keys-body tr[data-key="config/app/color"]', { timeout: SHOW_MS });
    await page.waitForSelector('#keys-body tr[data-key="config/app/color"] td[data-label="Actions"] [data-access="read"]', { state: 'attached', timeout: SHOW_MS });
    expect(await page.$$('#keys-body button')).toHaveLength(0);
    expect(await page.isHidden('#keys-new')).toBe(true);
    await shot(page, 'ops-reader-keys');
    // The same requests the buttons would send, from the page with its token: refused.
    const statuses = await page.evaluate(async () => {
      const t = sessionStorage.getItem('roster.token');
      const hd = { authorization: `Bearer ${t}`, 'x-roster-request': '1', 'content-type': 'application/json' };
      const a = await fetch('/api/v1/instances/orders/o-1', { method: 'DELETE', headers: hd });
      const b = await fetch('/api/v1/instances/orders/o-1', { method: 'PATCH', headers: hd, body: '{"status":"up"}' });
      const c = await fetch('/api/v1/keys/config%2Fapp%2Fcolor', { method: 'DELETE', headers: hd });
      return [a.status, b.status, c.status];
    });
    expect(statuses).toEqual([403, 403, 403]);
    expect(await backend.get('services/orders/o-1')).toBeDefined();
    expect(await backend.get('config/app/color')).toBeDefined();
    await ctx.close();
  });

  it('shows locks with holder, fencing token and waiters, elections with leader, term and candidates, and follows a release', async () => {
    const s1 = await backend.session({ ttl: 20_000 });
    const s2 = await backend.session({ ttl: 20_000 });
    const held = await lock(backend, s1, 'nightly-job');
    const ac = new AbortController();
    const second = lock(backend, s2, 'nightly-job', { signal: ac.signal });
    const leader = new Election(backend, s1, 'scheduler');
    await leader.campaign('node-a');
    const candidate = new Election(backend, s2, 'scheduler');
    const candidacy = candidate.campaign('node-b', { signal: ac.signal }).catch(() => undefined);
    const { ctx, page } = await open(w.tokens.admin!, '#/locks');
    try {
      await page.waitForFunction(
        () => document.querySelectorAll('#elections-body tr[data-election="scheduler"] td[data-label="Candidates"] li').length === 1,
        null,
        { timeout: SHOW_MS },
      );
      expect(await page.textContent('#elections-body tr[data-election="scheduler"] td[data-label="Value"]')).toBe('node-a');
      expect(Number(await page.textContent('#elections-body tr[data-election="scheduler"] td[data-label="Term"]'))).toBe(leader.term);
      expect(await page.getAttribute('#elections-body tr[data-election="scheduler"] td[data-label="Leader"] code', 'title')).toContain(s1.id);
      await page.waitForFunction(
        (sid) => {
          const tr = document.querySelector('#locks-body tr[data-lock="nightly-job"]');
          return !!tr && tr.querySelectorAll('td[data-label="Waiters"] li').length === 1 && (tr.querySelector('td[data-label="Holder"] code')?.getAttribute('title') ?? '').includes(sid);
        },
        s1.id,
        { timeout: SHOW_MS },
      );
      const token = await page.textContent('#locks-body tr[data-lock="nightly-job"] td[data-label="Fencing token"]');
      expect(Number(token)).toBe(held.token);
      await shot(page, 'ops-locks');
      // Released: the waiter holds it, with a higher token; the page follows (on the server's events).
      await held.unlock();
      const next = await second;
      await page.waitForFunction(
        (tok) => document.querySelector('#locks-body tr[data-lock="nightly-job"] td[data-label="Fencing token"]')?.textContent === String(tok),
        next.token,
        { timeout: SHOW_MS },
      );
      expect(next.token).toBeGreaterThan(held.token);
      expect(await page.$$('#locks-body tr[data-lock="nightly-job"] td[data-label="Waiters"] li')).toHaveLength(0);
      await next.unlock();
      await page.waitForSelector('#locks-body tr[data-lock="nightly-job"]', { state: 'detached', timeout: SHOW_MS });
    } finally {
      ac.abort();
      await candidacy;
      await leader.resign().catch(() => undefined);
      await ctx.close();
      await s1.close();
      await s2.close();
    }
  });

  it('shows a health badge per instance and a per-check panel with status and output', async () => {
    await registrar.register({ service: 'payments', id: 'p-1', address: '10.0.1.1', port: 9000, checks: [{ id: 'p1-ttl', name: 'heartbeat', ttl: '60s' }] });
    await registrar.register({ service: 'payments', id: 'p-2', address: '10.0.1.2', port: 9000 });
    const { ctx, page } = await open(w.tokens.admin!, '#/services/payments');
    const pass = await w.as('admin', 'POST', '/api/v1/checks/p1-ttl/pass', { output: 'all good' });
    expect(pass.status).toBe(200);
    await page.waitForSelector(`${row('p-1')} button.health[data-health="passing"]`, { timeout: SHOW_MS });
    // No checks: no badge.
    expect(await page.textContent(`${row('p-2')} td[data-label="Health"]`)).toBe('—');
    await page.click(`${row('p-1')} button.health`);
    await page.waitForSelector('#checks-body tr[data-check="p1-ttl"]', { timeout: SHOW_MS });
    expect(await page.textContent('#checks-title')).toBe('Checks of payments/p-1');
    expect(await page.textContent('#checks-body tr[data-check="p1-ttl"] td[data-label="Status"]')).toBe('passing');
    expect(await page.textContent('#checks-body tr[data-check="p1-ttl"] td[data-label="Output"]')).toBe('all good');
    expect(await page.textContent('#checks-body tr[data-check="p1-ttl"] td[data-label="Type"]')).toBe('ttl');
    // Failing: the badge turns critical and the open panel follows with the new output.
    await w.as('admin', 'POST', '/api/v1/checks/p1-ttl/fail', { output: 'db unreachable' });
    await page.waitForSelector(`${row('p-1')} button.health[data-health="critical"]`, { timeout: SHOW_MS });
    await page.waitForFunction(() => document.querySelector('#checks-body tr[data-check="p1-ttl"] td[data-label="Output"]')?.textContent === 'db unreachable', null, { timeout: SHOW_MS });
    expect(await page.textContent('#checks-body tr[data-check="p1-ttl"] td[data-label="Status"]')).toBe('critical');
    // The services list counts it too.
    await page.waitForFunction(() => /1 critical/.test(document.querySelector('#svc-list li[data-service="payments"]')?.textContent ?? ''), null, { timeout: SHOW_MS });
    await shot(page, 'ops-health');
    await ctx.close();
    expect(pageErrors).toEqual([]);
  });
});
