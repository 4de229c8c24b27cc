/**
 * The dashboard against a server with auth on, in headless Chromium: it shows nothing but its
 * sign-in form until given a token; a wrong token is said to be wrong; with a reader's token it
 * shows the registry live, every API request carrying the token (kept in sessionStorage only: no
 * cookie, no localStorage); signing out forgets it. Another site cannot frame the dashboard.
 */
import { createServer, type Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { RemoteBackend } from '../../src/backends/remote/backend.js';
import { Registrar } from '../../src/registry/registrar.js';
import { secureWorld, type World } from './helpers.js';

const SHOW_MS = 10_000;

describe('dashboard sign-in (auth on)', () => {
  let w: World;
  let browser: Browser;
  let page: Page;
  let registrar: Registrar;
  let backend: RemoteBackend;
  let framer: Server;
  const apiRequests: { url: string; auth: string | undefined }[] = [];
  const pageErrors: string[] = [];

  beforeAll(async () => {
    w = await secureWorld({ heartbeatMs: 1000 });
    backend = await RemoteBackend.open(w.url, { token: w.tokens.svc!, keepProcessAlive: false });
    registrar = new Registrar(backend, { ttl: 30_000, keepProcessAlive: false });
    await registrar.register({ service: 'orders', id: 'o-1', address: '127.0.0.1', port: 9001 });
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = await browser.newPage();
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('request', (r) => {
      const u = new URL(r.url());
      if (u.pathname.startsWith('/api/') || u.pathname === '/metrics') apiRequests.push({ url: u.pathname, auth: r.headers().authorization });
    });
  }, 60_000);
  afterAll(async () => {
    await browser?.close();
    await registrar?.close();
    await backend?.close();
    await w?.close();
    await new Promise<void>((r) => (framer ? framer.close(() => r()) : r()));
  });

  it('shows the sign-in form and no data without a token; a wrong token is refused; a reader token shows the registry', async () => {
    await page.goto(`${w.url}/ui/`);
    await page.waitForSelector('#login:not([hidden])', { timeout: SHOW_MS });
    expect(await page.$$eval('#svc-list li', (lis) => lis.length)).toBe(0);
    expect(apiRequests.filter((r) => r.auth !== undefined)).toEqual([]);

    await page.fill('#login-token', 'roster.reader.not-the-right-secret-at-all-xxxxxxxxxxxxxxxxxxxxxx');
    await Promise.all([page.waitForNavigation(), page.click('#login button[type=submit]')]);
    await page.waitForFunction(() => /not accepted/.test(document.getElementById('login-error')?.textContent ?? ''), null, { timeout: SHOW_MS });
    expect(await page.$$eval('#svc-list li', (lis) => lis.length)).toBe(0);

    apiRequests.length = 0;
    await page.fill('#login-token', w.tokens.reader!);
    await Promise.all([page.waitForNavigation(), page.click('#login button[type=submit]')]);
    await page.waitForSelector('#svc-list li[data-service="orders"]', { timeout: SHOW_MS });
    await page.waitForSelector('#conn[data-conn="live"]', { timeout: SHOW_MS });
    expect(await page.isHidden('#login')).toBe(true);
    expect(await page.isVisible('#signout')).toBe(true);
    expect(apiRequests.length).toBeGreaterThan(0);
    for (const r of apiRequests) expect(r.auth, r.url).toBe(`Bearer ${w.tokens.reader}`);
    expect(await page.evaluate(() => sessionStorage.getItem('roster.token'))).toBe(w.tokens.reader);
    expect(await page.evaluate(() => localStorage.length)).toBe(0);
    expect(await page.context().cookies()).toEqual([]);

    // Live: a new instance shows without a reload.
    await registrar.register({ service: 'orders', id: 'o-2', address: '127.0.0.1', port: 9002 });
    await page.click('#svc-list li[data-service="orders"] a, #svc-list li[data-service="orders"]');
    await page.waitForSelector('#inst-body tr[data-id="o-2"]', { timeout: SHOW_MS });
  });

  it('signing out forgets the token and shows the form again', async () => {
    await Promise.all([page.waitForNavigation(), page.click('#signout')]);
    await page.waitForSelector('#login:not([hidden])', { timeout: SHOW_MS });
    expect(await page.evaluate(() => sessionStorage.getItem('roster.token'))).toBeNull();
    expect(pageErrors).toEqual([]);
  });

  it('another site cannot frame it (frame-ancestors none, X-Frame-Options DENY)', async () => {
    framer = createServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end(`<!doctype html><iframe id="f" src="${w.url}/ui/"></iframe>`);
    });
    await new Promise<void>((r) => framer.listen(0, '127.0.0.1', () => r()));
    const port = (framer.address() as { port: number }).port;
    const p = await browser.newPage();
    // Chromium says so on the console when it refuses to show a frame.
    const refused = p.waitForEvent('console', { predicate: (m) => /frame-ancestors|X-Frame-Options|Refused to display/i.test(m.text()), timeout: SHOW_MS });
    await p.goto(`http://localhost:${port}/`);
    await refused;
    const frame = p.frames().find((f) => f !== p.mainFrame());
    const content = frame ? await frame.evaluate(() => document.getElementById('login') !== null).catch(() => false) : false;
    expect(content).toBe(false);
    await p.close();
  });
});
