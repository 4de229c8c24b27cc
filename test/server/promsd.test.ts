/**
 * Prometheus HTTP service discovery against a real Prometheus 2.42 (Debian `prometheus`), started
 * by the test with an `http_sd_configs` job pointing at roster's /api/v1/prometheus/sd
 * (refresh_interval 1s). Three instances, registered with a Registrar through the HTTP API and
 * each serving /metrics, become active targets carrying the __meta_roster_* labels (and relabeled
 * target labels), are scraped "up", and a deregistered one is dropped.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openBackend } from '../../src/index.js';
import type { Backend } from '../../src/contract/types.js';
import { Registrar } from '../../src/registry/index.js';
import { freePort } from '../helpers/etcd.js';
import { startInProcess, type InProcessServer } from '../helpers/server.js';
import { LineProcess } from '../helpers/thirdparty.js';
import { eventually } from '../helpers/watch.js';

const PROMETHEUS = '/usr/bin/prometheus';

interface ActiveTarget {
  discoveredLabels: Record<string, string>;
  labels: Record<string, string>;
  scrapePool: string;
  health: 'up' | 'down' | 'unknown';
}

let srv: InProcessServer;
let backend: Backend;
let dir: string;
let prom: LineProcess | undefined;
let promUrl: string;
const metricServers: Server[] = [];

/** A tiny HTTP server with a /metrics endpoint, like the services Prometheus would scrape. */
async function metricsServer(): Promise<number> {
  const s = createServer((req, res) => {
    res.writeHead(req.url === '/metrics' ? 200 : 404, { 'content-type': 'text/plain; version=0.0.4' });
    res.end('roster_test_up 1\n');
  });
  metricServers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  return (s.address() as { port: number }).port;
}

async function targets(): Promise<ActiveTarget[]> {
  const res = await fetch(`${promUrl}/api/v1/targets?state=active`);
  const body = (await res.json()) as { data: { activeTargets: ActiveTarget[] } };
  return body.data.activeTargets.filter((t) => t.scrapePool === 'roster');
}

describe.skipIf(!existsSync(PROMETHEUS))('Prometheus http_sd_configs against roster server', () => {
  beforeAll(async () => {
    srv = await startInProcess();
    backend = await openBackend(srv.url);
    dir = await mkdtemp(join(tmpdir(), 'roster-prom-'));
  }, 60_000);
  afterAll(async () => {
    if (prom) {
      prom.proc.kill('SIGTERM');
      const t = setTimeout(() => prom!.proc.kill('SIGKILL'), 5000);
      await prom.exited;
      clearTimeout(t);
    }
    await Promise.all(metricServers.map((s) => new Promise((r) => s.close(r))));
    await backend?.close();
    await srv?.cleanup();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('the SD body: one group per instance with __meta_roster_* labels; service filter; bad input is a 400', async () => {
    const reg = new Registrar(backend, { ttl: 5000 });
    try {
      await reg.register({ service: 'sd-a', id: 'x1', address: '10.2.0.1', port: 80, tags: ['t1', 't2'], metadata: { version: '1.2', 'team.name': 'core' }, zone: 'z1', weight: 3 });
      await reg.register({ service: 'sd-b', id: 'y1', address: 'fd00::1', port: 81, status: 'draining' });
      await reg.register({ service: 'sd-b', id: 'y2', address: 'y2.internal' });
      const all = (await (await fetch(`${srv.url}/api/v1/prometheus/sd`)).json()) as { targets: string[]; labels: Record<string, string> }[];
      expect(all).toEqual([
        {
          targets: ['10.2.0.1:80'],
          labels: {
            __meta_roster_service: 'sd-a',
            __meta_roster_id: 'x1',
            __meta_roster_address: '10.2.0.1',
            __meta_roster_port: '80',
            __meta_roster_tags: ',t1,t2,',
            __meta_roster_weight: '3',
            __meta_roster_status: 'up',
            __meta_roster_health: 'passing',
            __meta_roster_zone: 'z1',
            __meta_roster_metadata_team_name: 'core',
            __meta_roster_metadata_version: '1.2',
          },
        },
        expect.objectContaining({ targets: ['[fd00::1]:81'], labels: expect.objectContaining({ __meta_roster_id: 'y1', __meta_roster_status: 'draining' }) }),
        expect.objectContaining({ targets: ['y2.internal'], labels: expect.objectContaining({ __meta_roster_id: 'y2', __meta_roster_port: '' }) }),
      ]);
      const onlyB = (await (await fetch(`${srv.url}/api/v1/prometheus/sd?service=sd-b`)).json()) as unknown[];
      expect(onlyB).toHaveLength(2);
      const bad = await fetch(`${srv.url}/api/v1/prometheus/sd?job=x`);
      expect(bad.status).toBe(400);
      expect(((await bad.json()) as { error: { code: string } }).error.code).toBe('INVALID_ARGUMENT');
      expect((await fetch(`${srv.url}/api/v1/prometheus/sd?service=no%20such`)).status).toBe(400);
    } finally {
      await reg.close();
    }
  });

  it('a real Prometheus discovers the registered instances with their labels, scrapes them, and drops a deregistered one', async () => {
    const reg = new Registrar(backend, { ttl: 5000 });
    const ids = ['web-1', 'web-2', 'web-3'];
    const ports = new Map<string, number>();
    for (const id of ids) {
      const port = await metricsServer();
      ports.set(id, port);
      await reg.register({ service: 'web', id, address: '127.0.0.1', port, tags: ['http'], metadata: { version: `v${id.at(-1)}` } });
    }
    const promPort = await freePort();
    promUrl = `http://127.0.0.1:${promPort}`;
    const config = join(dir, 'prometheus.yml');
    await writeFile(
      config,
      [
        'global: { scrape_interval: 1s, evaluation_interval: 1s }',
        'scrape_configs:',
        '  - job_name: roster',
        '    http_sd_configs:',
        `      - url: ${srv.url}/api/v1/prometheus/sd?service=web`,
        '        refresh_interval: 1s',
        '    relabel_configs:',
        '      - { source_labels: [__meta_roster_service], target_label: service }',
        '      - { source_labels: [__meta_roster_metadata_version], target_label: version }',
        '      - { source_labels: [__meta_roster_health], target_label: health }',
        '',
      ].join('\n'),
    );
    prom = new LineProcess('prometheus', PROMETHEUS, [
      `--config.file=${config}`,
      `--storage.tsdb.path=${join(dir, 'data')}`,
      `--web.listen-address=127.0.0.1:${promPort}`,
      '--log.level=warn',
    ]);
    await eventually(async () => (await fetch(`${promUrl}/-/ready`).catch(() => undefined))?.ok === true, 30_000, 'Prometheus ready');

    const t0 = performance.now();
    await eventually(async () => (await targets()).length === 3, 20_000, 'three active targets');
    const discovered = performance.now() - t0;
    const found = (await targets()).sort((a, b) => (a.discoveredLabels.__meta_roster_id! < b.discoveredLabels.__meta_roster_id! ? -1 : 1));
    expect(found.map((t) => t.discoveredLabels.__address__)).toEqual(ids.map((id) => `127.0.0.1:${ports.get(id)}`));
    for (const [n, t] of found.entries()) {
      expect(t.discoveredLabels).toMatchObject({ __meta_roster_service: 'web', __meta_roster_id: ids[n], __meta_roster_tags: ',http,', __meta_roster_health: 'passing', __meta_roster_metadata_version: `v${n + 1}` });
      expect(t.labels).toMatchObject({ job: 'roster', service: 'web', version: `v${n + 1}`, health: 'passing', instance: `127.0.0.1:${ports.get(ids[n]!)}` });
    }
    await eventually(async () => (await targets()).every((t) => t.health === 'up'), 20_000, 'every target scraped up');

    const t1 = performance.now();
    await reg.deregister({ service: 'web', id: 'web-2' });
    await eventually(async () => (await targets()).length === 2, 20_000, 'deregistered target dropped');
    const dropped = performance.now() - t1;
    expect((await targets()).map((t) => t.discoveredLabels.__meta_roster_id).sort()).toEqual(['web-1', 'web-3']);
    console.log(`prometheus: 3 targets discovered ${Math.round(discovered)} ms after Prometheus was ready; deregistered target dropped after ${Math.round(dropped)} ms (refresh_interval 1s)`);
    await reg.close();
  }, 120_000);
});
