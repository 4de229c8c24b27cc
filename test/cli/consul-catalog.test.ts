/**
 * `roster register --layout consul-catalog` on consul://: the CLI registers through the agent API
 * (a TTL check its session passes), a Consul client's discovery (`/v1/health/service?passing`) sees
 * it, `roster ls --layout consul-catalog` lists it with its health, and Ctrl-C deregisters it. The
 * Consul agent is roster server's Consul-compatible /v1 (no Consul server exists on this machine).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startInProcess, type InProcessServer } from '../helpers/server.js';
import { Proc, requireBuilt, run } from '../helpers/cli.js';

interface HealthEntry {
  Service: { ID: string; Service: string; Address: string; Port: number };
  Checks: { Status: string }[];
}

describe('roster CLI on consul:// with the catalog layout', () => {
  let srv: InProcessServer;
  let consul: string;
  const procs: Proc[] = [];
  beforeAll(async () => {
    requireBuilt();
    // Consul's session TTL floor is 10 s; the /v1 API takes Consul's own `session_ttl_min` setting.
    srv = await startInProcess({ consul: { sessionTtlMin: '1s' } });
    consul = `consul://${new URL(srv.url).host}`;
  });
  afterAll(async () => {
    for (const p of procs) p.child.kill('SIGKILL');
    await srv?.cleanup();
  });

  const passing = async (service: string): Promise<HealthEntry[]> =>
    (await (await fetch(`${srv.url}/v1/health/service/${service}?passing`)).json()) as HealthEntry[];

  it('registers through the agent, is passing for Consul clients, is listed, and leaves on Ctrl-C', async () => {
    const reg = new Proc(['-b', consul, 'register', 'web', '127.0.0.1:9100', '--layout', 'consul-catalog', '--ttl', '4s']);
    procs.push(reg);
    await reg.waitLine((l) => l.startsWith('registered web/'), 15_000);
    const entries = await passing('web');
    expect(entries.map((e) => [e.Service.ID, e.Service.Address, e.Service.Port])).toEqual([['127.0.0.1:9100', '127.0.0.1', 9100]]);
    expect(entries[0]!.Checks.every((c) => c.Status === 'passing')).toBe(true);
    const ls = await run(['-b', consul, 'ls', 'web', '--layout', 'consul-catalog']);
    expect(ls.code, ls.stderr).toBe(0);
    expect(ls.stdout).toMatch(/^127\.0\.0\.1:9100\s+127\.0\.0\.1:9100\s+passing\s/m);
    const services = await run(['-b', consul, 'ls', '--layout', 'consul-catalog']);
    expect(services.stdout).toMatch(/^web\s+1$/m);
    reg.child.kill('SIGINT');
    expect(await reg.exit).toBe(0);
    expect(await passing('web')).toEqual([]);
  }, 40_000);

  it('refuses the catalog layout on a backend that is not consul://', async () => {
    const r = await run(['-b', srv.url, 'ls', 'web', '--layout', 'consul-catalog']);
    expect(r.code).toBe(2);
    expect(r.stderr.trim().split('\n')).toHaveLength(1);
    expect(r.stderr).toMatch(/--layout consul-catalog needs a consul:\/\/ backend/);
  });
});
