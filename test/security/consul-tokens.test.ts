/**
 * X-Consul-Token (and python-consul 0.7's ?token=) map onto roster's tokens and policies: real
 * Consul clients (npm consul 2.x; Debian's python3-consul2 and python3-consul) against a roster
 * server with auth on. An admin token registers and writes; a read-only token reads and is refused
 * writes with 403 (python's ACLPermissionDenied); no token is 401.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import Consul from 'consul';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { secureWorld, type World } from './helpers.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const clients = [
  { name: 'python3-consul2', dir: '/usr/lib/python3/dist-packages' },
  { name: 'python3-consul', dir: join(root, '.cache/consul-clients/python3-consul/usr/lib/python3/dist-packages') },
];

/** The clients read CONSUL_HTTP_TOKEN over their token argument: keep it out of their environment. */
function withoutConsulToken(): NodeJS.ProcessEnv {
  const env = { ...process.env };
  delete env.CONSUL_HTTP_TOKEN;
  return env;
}

describe('Consul clients with roster tokens', () => {
  let w: World;
  beforeAll(async () => {
    w = await secureWorld();
  });
  afterAll(async () => {
    await w?.close();
  });

  it('npm consul: admin writes, a reader reads and is refused writes (403), no token is 401', async () => {
    const port = Number(new URL(w.url).port);
    const admin: any = new Consul({ host: '127.0.0.1', port, defaults: { token: w.tokens.admin! } });
    await admin.agent.service.register({ name: 'npmapp', id: 'npmapp-1', address: '10.0.0.8', port: 80 });
    await admin.kv.set('npm/a', '1');
    const reader: any = new Consul({ host: '127.0.0.1', port, defaults: { token: w.tokens.reader! } });
    expect((await reader.kv.get('npm/a')).Value).toBe('1');
    expect((await reader.catalog.service.nodes('npmapp')).map((s: { ServiceID: string }) => s.ServiceID)).toEqual(['npmapp-1']);
    await expect(reader.kv.set('npm/a', '2')).rejects.toMatchObject({ statusCode: 403 });
    await expect(reader.agent.service.deregister('npmapp-1')).rejects.toMatchObject({ statusCode: 403 });
    const anon: any = new Consul({ host: '127.0.0.1', port });
    await expect(anon.kv.get('npm/a')).rejects.toMatchObject({ statusCode: 401 });
    expect((await admin.kv.get('npm/a')).Value).toBe('1');
  });

  for (const c of clients) {
    it(`${c.name}: the same, with its token in a header (consul2) or ?token= (consul 0.7)`, async () => {
      if (!existsSync(join(c.dir, 'consul/base.py'))) throw new Error(`${c.name} is not installed: run test/consul/install-clients.sh (.ci/run does)`);
      const port = new URL(w.url).port;
      const out = await new Promise<string>((resolve, reject) => {
        execFile('/usr/bin/python3', [join(root, 'test/security/python/tokens.py'), port, c.dir, w.tokens.admin!, w.tokens.reader!], { env: { ...withoutConsulToken(), PYTHONPATH: c.dir }, timeout: 60_000 }, (err, stdout, stderr) =>
          err ? reject(new Error(`${c.name}: ${stderr || stdout || String(err)}`)) : resolve(stdout),
        );
      });
      const r = JSON.parse(out.trim().split('\n').pop()!) as Record<string, string | string[]>;
      expect(String(r.module).startsWith(c.dir)).toBe(true);
      expect(r.registered).toEqual(['pyapp-1']);
      expect(r.kv).toBe('1');
      expect(r.reader_reads).toBe('1');
      expect(r.reader_write).toBe('denied');
      // roster answers 401 (python-consul names that ACLDisabled, after Consul's own use of it).
      expect(String(r.anonymous)).toMatch(/^ACLDisabled:.*UNAUTHENTICATED.*X-Consul-Token/);
      expect(r.after).toBe('1');
    }, 60_000);
  }
});
