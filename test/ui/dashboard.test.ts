/**
 * The dashboard (ui/) in a real headless Chromium against a real in-process roster server:
 * instances registered through the Registrar appear without a reload, a deregistered one goes away,
 * registry data that looks like HTML is shown as text, the Sessions and Keys views read the API,
 * and the connection indicator goes stale when the server stops and live again when it comes back
 * on the same port and data dir (the stream resumes by revision: a change made while the page was
 * disconnected shows up).
 *
 * Screenshots go to $ROSTER_UI_ARTIFACTS or <tmpdir>/roster-ui-artifacts (printed at the end).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type Browser, type Page } from 'playwright-core';
import { startServer, type RosterServer } from '../../src/server/index.js';
import { RemoteBackend } from '../../src/backends/remote/index.js';
import { Registrar, type Registration } from '../../src/registry/index.js';
import { ServerProcess } from '../helpers/server.js';

const UI_DIR = fileURLToPath(new URL('../../ui/', import.meta.url));
const ARTIFACTS = process.env.ROSTER_UI_ARTIFACTS ?? join(tmpdir(), 'roster-ui-artifacts');
/** Bound for anything the page must show after a change on the server. */
const SHOW_MS = 10_000;
const XSS = '<img src=x onerror=alert(1)>';
/** A service name no validated API accepts, written as a raw key: the page must still be safe. */
const RAW_SERVICE = '<b>raw<b>';

describe('dashboard in headless Chromium', () => {
  let dataDir: string;
  let server: RosterServer;
  let port: number;
  let browser: Browser;
  let page: Page;
  let backend: RemoteBackend;
  let registrar: Registrar;
  const regs = new Map<string, Registration>();
  const pageErrors: string[] = [];
  const dialogs: string[] = [];
  const consoleErrors: string[] = [];
  const registrarErrors: unknown[] = [];
  const shots: string[] = [];

  const serverOptions = () => ({ port, dataDir, uiDir: UI_DIR, heartbeatMs: 1000 });

  async function shot(name: string): Promise<string> {
    const path = join(ARTIFACTS, `${name}.png`);
    await page.screenshot({ path, fullPage: false });
    shots.push(path);
    return path;
  }

  async function api(method: string, path: string, body?: unknown): Promise<Response> {
    const res = await fetch(`${server.url}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? null : JSON.stringify(body),
      signal: AbortSignal.timeout(10_000),
    });
    return res;
  }

  beforeAll(async () => {
    dataDir = await mkdtemp(join(tmpdir(), 'roster-ui-'));
    await mkdir(ARTIFACTS, { recursive: true });
    port = 0;
    server = await startServer(serverOptions());
    port = server.port;
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') consoleErrors.push(`${m.text()} (${m.location().url})`);
    });
    page.on('dialog', (d) => {
      dialogs.push(d.message());
      void d.dismiss();
    });
    backend = await RemoteBackend.open(server.url);
    registrar = new Registrar(backend, { ttl: '30s' });
    registrar.on('error', (e) => registrarErrors.push(e.error));
  });

  afterAll(async () => {
    await registrar?.close().catch(() => undefined);
    await backend?.close();
    await browser?.close();
    await server?.close();
    if (dataDir) await rm(dataDir, { recursive: true, force: true });
    if (shots.length) console.log(`dashboard screenshots:\n  ${shots.join('\n  ')}`);
  });

  async function register(input: Parameters<Registrar['register']>[0]): Promise<void> {
    const r = await registrar.register(input);
    regs.set(`${r.instance.service}/${r.instance.id}`, r);
  }

  const serviceItem = (name: string) => `#svc-list li[data-service="${name}"]`;
  const instRow = (id: string) => `#inst-body tr[data-id="${id}"]:not(.is-removed)`;

  it('loads, connects the live stream and shows the server header', async () => {
    const res = await page.goto(`${server.url}/ui/`);
    expect(res?.status()).toBe(200);
    await page.waitForSelector('#conn[data-conn="live"]', { timeout: SHOW_MS });
    await page.waitForFunction(() => document.getElementById('health')?.textContent === 'healthy', null, { timeout: SHOW_MS });
    await page.waitForFunction(() => /at revision \d+/.test(document.getElementById('view-rev')?.textContent ?? ''), null, { timeout: SHOW_MS });
    expect(await page.textContent('#svc-empty')).toBe('No services registered yet.');
  });

  it('shows instances registered after the page loaded, without a reload', async () => {
    await register({ service: 'orders', id: 'orders-1', address: '10.0.0.1', port: 8080, zone: 'eu-west-1a', tags: ['v2', 'canary'], metadata: { version: '2.4.1', team: 'checkout' } });
    await register({ service: 'orders', id: 'orders-2', address: '10.0.0.2', port: 8080, zone: 'eu-west-1b', weight: 3, tags: ['v2'], metadata: { version: '2.4.1' } });
    await register({ service: 'orders', id: 'orders-3', address: '10.0.0.3', port: 8080, zone: 'eu-west-1a', status: 'draining', metadata: { version: '2.3.9' } });
    await register({ service: 'payments', id: 'pay-1', address: 'payments-1.internal', port: 9443, zone: 'eu-west-1a', tags: ['pci'] });
    await register({ service: 'search', id: 'search-a', address: 'fd00::12', port: 7700, metadata: { shard: '0-15' } });

    await page.waitForFunction(
      () => document.querySelector('#svc-list li[data-service="orders"] .svc-count')?.textContent === '3',
      null,
      { timeout: SHOW_MS },
    );
    await page.waitForSelector(serviceItem('payments'), { timeout: SHOW_MS });
    await page.click(`${serviceItem('orders')} a`);
    expect(page.url()).toMatch(/#\/services\/orders$/);
    const row = await page.waitForSelector(instRow('orders-2'), { timeout: SHOW_MS });
    const cells = await row.$$eval('td', (tds) => tds.map((td) => td.textContent ?? ''));
    expect(cells[0]).toBe('up');
    expect(cells[1]).toBe('orders-2');
    expect(cells[2]).toBe('10.0.0.2:8080');
    expect(cells[3]).toBe('eu-west-1b');
    expect(cells[4]).toBe('3');
    expect(cells[5]).toBe('v2');
    expect(cells[6]).toBe('version=2.4.1');
    expect(cells[7]).toBe(registrar.session!.id.slice(0, 8) + '…');
    expect(await page.textContent(`${instRow('orders-3')} .status`)).toBe('draining');
    // Registered while the page watched: highlighted as new.
    expect(await page.getAttribute(instRow('orders-1'), 'class')).toContain('is-new');
    expect(await page.textContent('#svc-summary')).toContain('3 instances');

    // IPv6 endpoint is bracketed.
    await page.click(`${serviceItem('search')} a`);
    expect(await page.textContent(`${instRow('search-a')} td:nth-child(3)`)).toBe('[fd00::12]:7700');

    // The event log saw each registration with its revision.
    const recent = await page.$$eval('#recent-log .entry', (lis) => lis.map((li) => li.textContent ?? ''));
    expect(recent.some((t) => /#\d+create.*search\/search-a/.test(t))).toBe(true);
  });

  it('filters services by name, tag and metadata', async () => {
    await page.fill('#filter', 'pci');
    await page.waitForFunction(() => document.querySelectorAll('#svc-list li').length === 1, null, { timeout: SHOW_MS });
    expect(await page.getAttribute('#svc-list li', 'data-service')).toBe('payments');
    await page.fill('#filter', 'version=2.3');
    await page.waitForFunction(() => document.querySelectorAll('#svc-list li').length === 1, null, { timeout: SHOW_MS });
    await page.click(`${serviceItem('orders')} a`);
    // Only the matching instance of orders is listed.
    await page.waitForFunction(() => document.querySelectorAll('#inst-body tr').length === 1, null, { timeout: SHOW_MS });
    expect(await page.getAttribute('#inst-body tr', 'data-id')).toBe('orders-3');
    await page.fill('#filter', 'no-such-thing');
    await page.waitForSelector('#svc-empty:not([hidden])', { timeout: SHOW_MS });
    expect(await page.textContent('#svc-empty')).toBe('No service matches the filter.');
    await page.fill('#filter', '');
    await page.waitForFunction(() => document.querySelectorAll('#inst-body tr').length === 3, null, { timeout: SHOW_MS });
  });

  it('removes a deregistered instance without a reload', async () => {
    // Keyboard focus on the service stays put while its entry updates live.
    await page.focus(`${serviceItem('orders')} a`);
    expect(await regs.get('orders/orders-2')!.deregister()).toBe(true);
    // It fades out, then leaves the DOM; the count drops at once.
    await page.waitForFunction(
      () => document.querySelector('#svc-list li[data-service="orders"] .svc-count')?.textContent === '2',
      null,
      { timeout: SHOW_MS },
    );
    await page.waitForSelector('#inst-body tr[data-id="orders-2"]', { state: 'detached', timeout: SHOW_MS });
    expect(await page.evaluate(() => document.activeElement?.closest('li')?.getAttribute('data-service'))).toBe('orders');
    expect(await page.$$eval('#inst-body tr', (trs) => trs.map((tr) => tr.getAttribute('data-id')))).toEqual(['orders-1', 'orders-3']);
    const recent = await page.$$eval('#recent-log .entry', (lis) => lis.map((li) => li.textContent ?? ''));
    expect(recent[0]).toMatch(/delete.*orders\/orders-2/);
  });

  it('renders HTML-looking registry data as text', async () => {
    await register({ service: 'xss', id: 'x-1', address: '10.9.9.9', port: 80, metadata: { note: XSS, 'html/b': '<b>bold</b>' } });
    // Not a valid service name, so only a raw key write can create it; the page must cope anyway.
    const put = await api('PUT', `/api/v1/keys/services/${encodeURIComponent(RAW_SERVICE)}/${encodeURIComponent('<i>id<i>')}`, {
      value: JSON.stringify({ address: XSS, port: 1, tags: ['<script>alert(2)</script>'] }),
    });
    expect(put.status).toBe(200);

    await page.waitForSelector(serviceItem('xss'), { timeout: SHOW_MS });
    await page.click(`${serviceItem('xss')} a`);
    await page.waitForSelector(instRow('x-1'), { timeout: SHOW_MS });
    const chips = await page.$$eval(`${instRow('x-1')} .chip.kv`, (els) => els.map((e) => e.textContent));
    expect(chips).toEqual(['html/b=<b>bold</b>', `note=${XSS}`]);

    // The raw service shows up under its literal name and is flagged as invalid.
    const raw = await page.waitForSelector(serviceItem(RAW_SERVICE), { timeout: SHOW_MS });
    expect(await raw.$eval('.svc-name', (e) => e.textContent)).toBe(RAW_SERVICE);
    await raw.$eval('a', (a) => (a as HTMLAnchorElement).click());
    await page.waitForFunction((name) => document.getElementById('svc-title')?.textContent === name, RAW_SERVICE, { timeout: SHOW_MS });
    const rawRow = await page.waitForSelector('#inst-body tr[data-id="<i>id<i>"]', { timeout: SHOW_MS });
    expect(await rawRow.$eval('.status', (e) => e.textContent)).toBe('invalid');
    expect(await rawRow.$eval('td:nth-child(3)', (e) => e.textContent)).toBe(`${XSS}:1`);

    // Nothing was parsed as markup anywhere on the page, and nothing ran.
    const injected = await page.evaluate(() => document.querySelectorAll('img, b, i, script:not([src])').length);
    expect(injected).toBe(0);
    // The event log shows the raw key literally too.
    await page.click('#tab-events');
    await page.waitForFunction(
      (key) => Array.from(document.querySelectorAll('#events-log .key')).some((e) => e.textContent === key),
      `services/${RAW_SERVICE}/<i>id<i>`,
      { timeout: SHOW_MS },
    );
    expect(await page.evaluate(() => document.querySelectorAll('img, b, i, svg, script:not([src])').length)).toBe(0);
    expect(dialogs).toEqual([]);
    expect(pageErrors).toEqual([]);
    await page.click('#tab-services');
  });

  it('lists sessions and browses keys', async () => {
    const sid = registrar.session!.id;
    // The tab list is keyboard operable (arrow keys move between views).
    await page.focus('#tab-services');
    await page.keyboard.press('ArrowRight');
    await page.waitForSelector('#tab-sessions[aria-selected="true"]', { timeout: SHOW_MS });
    expect(await page.evaluate(() => document.activeElement?.id)).toBe('tab-sessions');
    const row = await page.waitForSelector(`#sess-body tr[data-session="${sid}"]`, { timeout: SHOW_MS });
    const cells = await row.$$eval('td', (tds) => tds.map((td) => td.textContent ?? ''));
    expect(cells[1]).toBe('30s');
    expect(Number(cells[3])).toBe(registrar.instances.length);
    expect(cells[2]).toMatch(/^\d+(\.\d)?s$/);
    expect(cells[4]).toContain('orders/orders-1');
    await shot('dashboard-sessions');

    await page.click('#tab-keys');
    await page.fill('#keys-prefix', 'services/orders/');
    await page.click('#keys-form button');
    await page.waitForSelector('#keys-body tr[data-key="services/orders/orders-1"]', { timeout: SHOW_MS });
    expect(await page.$$eval('#keys-body tr', (trs) => trs.map((tr) => tr.getAttribute('data-key')))).toEqual([
      'services/orders/orders-1',
      'services/orders/orders-3',
    ]);
    expect(page.url()).toContain('#/keys?prefix=services%2Forders%2F');
    // Drill up through the breadcrumb and down through a sub-prefix chip.
    await page.click('#keys-crumbs a:text-is("services")');
    await page.waitForSelector('#keys-dirs a:has-text("payments/")', { timeout: SHOW_MS });
    await page.click('#keys-dirs a:has-text("payments/")');
    await page.waitForSelector('#keys-body tr[data-key="services/payments/pay-1"]', { timeout: SHOW_MS });
    // Errors from the API are shown, not swallowed.
    await page.fill('#keys-prefix', 'bad prefix');
    await page.click('#keys-form button');
    await page.waitForFunction(() => /Cannot list keys: INVALID_ARGUMENT/.test(document.getElementById('keys-summary')?.textContent ?? ''), null, { timeout: SHOW_MS });
    await page.fill('#keys-prefix', 'services/');
    await page.click('#keys-form button');
    await page.waitForSelector('#keys-body tr[data-key="services/xss/x-1"]', { timeout: SHOW_MS });
    await page.click('#keys-body tr[data-key="services/xss/x-1"] summary');
    await shot('dashboard-keys');
    await page.click('#tab-events');
    await shot('dashboard-events');

    await page.click('#tab-services');
    await page.click(`${serviceItem('orders')} a`);
    await page.waitForSelector(instRow('orders-1'), { timeout: SHOW_MS });
    // Let the "new" highlight settle so the screenshot shows the resting state.
    await page.waitForFunction(() => document.getAnimations().length === 0, null, { timeout: SHOW_MS });
    await shot('dashboard-1280x800');
    // The only failed request is the deliberately invalid prefix above.
    expect(consoleErrors.filter((m) => !m.includes('prefix=bad'))).toEqual([]);
  });

  it('works at a narrow width and in dark mode', async () => {
    await page.setViewportSize({ width: 700, height: 900 });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - document.documentElement.clientWidth);
    expect(overflow).toBeLessThanOrEqual(0);
    // Table rows become labelled cards.
    const label = await page.$eval(`${instRow('orders-1')} td:nth-child(3)`, (td) => getComputedStyle(td, '::before').content);
    expect(label).toBe('"Endpoint"');
    await shot('dashboard-700-narrow');
    await page.setViewportSize({ width: 1280, height: 800 });
    await page.emulateMedia({ colorScheme: 'dark' });
    expect(await page.evaluate(() => getComputedStyle(document.body).backgroundColor)).toBe('rgb(15, 19, 24)');
    await shot('dashboard-dark');
    await page.emulateMedia({ colorScheme: 'light' });
  });

  it('goes stale when the server stops and live again when it is back', async () => {
    await server.close();
    await page.waitForSelector('#conn[data-conn="stale"]', { timeout: SHOW_MS });
    await page.waitForSelector('#stale-banner:not([hidden])', { timeout: SHOW_MS });
    // Staleness is shown and counts up.
    await page.waitForFunction(() => /^for [1-9]\d*s$/.test(document.getElementById('conn-age')?.textContent ?? ''), null, { timeout: SHOW_MS });
    await page.waitForFunction(() => document.getElementById('health')?.textContent === 'unreachable', null, { timeout: SHOW_MS });
    // The last known state stays on screen.
    expect(await page.$$eval('#inst-body tr', (trs) => trs.map((tr) => tr.getAttribute('data-id')))).toEqual(['orders-1', 'orders-3']);
    expect(await page.title()).toMatch(/^⚠ stale/);
    await shot('dashboard-stale');

    server = await startServer(serverOptions());
    expect(server.port).toBe(port);
    // A change made before the page reconnects must arrive through the resumed stream.
    await register({ service: 'orders', id: 'orders-4', address: '10.0.0.4', port: 8080, zone: 'eu-west-1c' });
    await page.waitForSelector('#conn[data-conn="live"]', { timeout: 20_000 });
    await page.waitForSelector('#stale-banner', { state: 'hidden', timeout: SHOW_MS });
    expect(await page.textContent('#conn-age')).toBe('');
    await page.waitForSelector(instRow('orders-4'), { timeout: SHOW_MS });
    await page.waitForFunction(() => document.getElementById('health')?.textContent === 'healthy', null, { timeout: SHOW_MS });
    const log = await page.$$eval('#recent-log .entry', (lis) => lis.map((li) => li.textContent ?? ''));
    expect(log.some((t) => /live updates resumed after \d+s \(from revision \d+\)/.test(t))).toBe(true);
    expect(log.some((t) => /live updates interrupted/.test(t))).toBe(true);
    // The server's history is a new one (a new epoch): the page starts it over, from the new start.
    await page.goto(`${server.url}/ui/#/events`);
    await page.waitForFunction(
      () => {
        const types = Array.from(document.querySelectorAll('#history-log .entry')).map((e) => `${e.getAttribute('data-type')} ${e.textContent}`);
        return types.some((t) => t.startsWith('server.started')) && types.some((t) => /^instance\.registered .*orders-4/.test(t));
      },
      null,
      { timeout: SHOW_MS },
    );
    const hist = await page.$$eval('#history-log .entry', (lis) => lis.map((li) => `${li.getAttribute('data-type')} ${li.textContent}`));
    expect(hist.filter((t) => t.startsWith('server.started'))).toHaveLength(1);
    expect(hist.some((t) => /orders-1/.test(t))).toBe(false); // registered before the restart
    // The same page saw both servers (a hash navigation, no reload): it says the history started over.
    expect(await page.textContent('#history-summary')).toMatch(/the server restarted while this page was open/);
    expect(pageErrors).toEqual([]);
  });
});

/**
 * A hung server keeps the TCP connection open but sends nothing: no error ever reaches the page.
 * The dashboard must notice the missing heartbeats, say it is stale, and recover when the server
 * runs again; and after a kill -9 and restart it must resume as well.
 */
describe('dashboard against a server process', () => {
  let proc: ServerProcess;
  let browser: Browser;
  let page: Page;
  let stopped = false;

  beforeAll(async () => {
    proc = await ServerProcess.start({ options: { uiDir: UI_DIR, heartbeatMs: 1000 } });
    browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    });
    page = await browser.newPage({ viewport: { width: 1280, height: 800 } });
  });

  afterAll(async () => {
    if (stopped && proc?.pid) process.kill(proc.pid, 'SIGCONT');
    await browser?.close();
    await proc?.cleanup();
  });

  const put = (key: string, value: string) =>
    fetch(`${proc.url}/api/v1/keys/${key}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ value }),
      signal: AbortSignal.timeout(10_000),
    });

  it('goes stale when heartbeats stop (hung server) and recovers', async () => {
    expect((await put('services/api/a1', '{"address":"10.1.0.1","port":80}')).status).toBe(200);
    await page.goto(`${proc.url}/ui/#/services/api`);
    await page.waitForSelector('#conn[data-conn="live"]', { timeout: SHOW_MS });
    await page.waitForSelector('#inst-body tr[data-id="a1"]', { timeout: SHOW_MS });

    process.kill(proc.pid!, 'SIGSTOP');
    stopped = true;
    // 2.5 heartbeat intervals (floored at 3 s) of silence, then stale.
    await page.waitForSelector('#conn[data-conn="stale"]', { timeout: 15_000 });
    expect(await page.textContent('#stale-banner')).toMatch(/no data or heartbeat for \d+s/);
    process.kill(proc.pid!, 'SIGCONT');
    stopped = false;
    await page.waitForSelector('#conn[data-conn="live"]', { timeout: 20_000 });
    expect((await put('services/api/a2', '{"address":"10.1.0.2","port":80}')).status).toBe(200);
    await page.waitForSelector('#inst-body tr[data-id="a2"]', { timeout: SHOW_MS });
  });

  it('resumes after the server is killed and restarted', async () => {
    await proc.restart();
    // Written before the page can have reconnected: it must arrive through the resumed stream.
    expect((await put('services/api/a3', '{"address":"10.1.0.3","port":80}')).status).toBe(200);
    await page.waitForSelector('#inst-body tr[data-id="a3"]', { timeout: 20_000 });
    await page.waitForSelector('#conn[data-conn="live"]', { timeout: SHOW_MS });
    expect(await page.$$eval('#inst-body tr:not(.is-removed)', (trs) => trs.map((tr) => tr.getAttribute('data-id')))).toEqual(['a1', 'a2', 'a3']);
  });
});
