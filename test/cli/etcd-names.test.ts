/**
 * Go-style absolute names on the command line (docs/interop.md): on `etcd://h:p/` a key, prefix or
 * root spelled from the store's root (`/locks/job`, `/services`) is what Go programs and etcdctl
 * use; on `etcd://h:p` (no trailing '/') such a name is refused with the fix, and an `ls` that
 * finds nothing says why.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startEtcd, type EtcdServer } from '../helpers/etcd.js';
import { Proc, requireBuilt, run } from '../helpers/cli.js';

describe('CLI names on etcd, as Go programs spell them', () => {
  let etcd: EtcdServer;
  const procs: Proc[] = [];
  beforeAll(async () => {
    requireBuilt();
    etcd = await startEtcd();
    await etcd.etcdctl('put', '/services/web/10.0.0.1:8080', '10.0.0.1:8080');
    await etcd.etcdctl('put', '/config/limits', '{"rps":5}');
  }, 60_000);
  afterAll(async () => {
    for (const p of procs) p.child.kill('SIGKILL');
    await etcd?.stop();
  });

  it('etcd://h:p/ takes absolute keys, prefixes and roots', async () => {
    const slash = etcd.url('/');
    expect((await run(['-b', slash, 'kv', 'get', '/config/limits'])).stdout).toBe('{"rps":5}');
    expect((await run(['-b', slash, 'kv', 'get', 'config/limits'])).stdout).toBe('{"rps":5}');
    const ls = await run(['-b', slash, 'ls', '--layout', 'plain', '--root', '/services']);
    expect(ls.code, ls.stderr).toBe(0);
    expect(ls.stdout).toMatch(/^web +1$/m);
    expect((await run(['-b', slash, 'ls', 'web', '--layout', 'plain', '--root', '/services'])).stdout).toMatch(/^10\.0\.0\.1:8080 +10\.0\.0\.1:8080 +- +up +- +-$/m);
    // roster lock --prefix /locks/job holds the key Go's concurrency.NewMutex(s, "/locks/job") and
    // `etcdctl lock /locks/job` contend for.
    const held = new Proc(['-b', slash, 'lock', 'job', '--prefix', '/locks/job', '--', process.execPath, '-e', 'setInterval(() => {}, 1000)']);
    procs.push(held);
    await held.waitStderr(/acquired lock job/);
    const keys = (await etcd.etcdctl('get', '--prefix', '--keys-only', '/locks/job/')).split('\n').filter(Boolean);
    expect(keys).toEqual([expect.stringMatching(/^\/locks\/job\/[0-9a-f]+$/)]);
    const ctl = etcd.etcdctl('lock', '/locks/job', 'echo', 'etcdctl-ran');
    const waiting = await Promise.race([ctl.then(() => 'ran'), new Promise((r) => setTimeout(() => r('waiting'), 1500))]);
    expect(waiting).toBe('waiting'); // etcdctl waits behind roster's lock
    held.child.kill('SIGINT');
    expect(await ctl).toContain('etcdctl-ran');
  }, 60_000);

  it('etcd://h:p (no trailing /) refuses absolute names with the fix; ls that finds nothing says why', async () => {
    const bare = etcd.url('');
    const lock = await run(['-b', bare, 'lock', 'job', '--prefix', '/locks/job', '--', 'true']);
    expect(lock.code).toBe(2);
    expect(lock.stderr).toMatch(/absolute --prefix "\/locks\/job" cannot be used here: .*etcd:\/\/host:2379\//);
    expect((await run(['-b', bare, 'kv', 'get', '/config/limits'])).code).toBe(2);
    const ls = await run(['-b', bare, 'ls', '--layout', 'plain', '--root', 'services']);
    expect(ls.code).toBe(0);
    expect(ls.stdout).toBe('SERVICE   INSTANCES');
    expect(ls.stderr).toMatch(/^roster: nothing under 'services\/' in etcd:\/\/127\.0\.0\.1:\d+ \(no trailing '\/': etcd keys without a leading '\/'\); Go programs usually write '\/services\/\.\.\.': use --backend etcd:\/\/127\.0\.0\.1:\d+\/\n$/);
  }, 30_000);
});
