/**
 * The published cluster fixtures (src/testing/cluster) do what they say: the proxy's faults, the
 * etcd cluster's and ZooKeeper ensemble's leader, kill, restart, pause, and no server outliving
 * the process that started it (exit, or kill -9 of that process).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EtcdCluster, TcpProxy, ZooKeeperEnsemble } from '../../src/testing/index.js';
import { DATA_ROOT } from './env.js';

const dataRoot = DATA_ROOT ? { dataRoot: DATA_ROOT } : {};

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitGone(pids: number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const left = pids.filter(alive);
    if (left.length === 0 || Date.now() > deadline) return left;
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('TcpProxy', () => {
  let echo: net.Server;
  let port: number;
  beforeAll(async () => {
    echo = net.createServer((s) => {
      s.on('error', () => undefined); // the proxy resets connections on purpose
      s.pipe(s);
    });
    await new Promise<void>((r) => echo.listen(0, '127.0.0.1', () => r()));
    port = (echo.address() as net.AddressInfo).port;
  });
  afterAll(() => new Promise<void>((r) => echo.close(() => r())));

  /** A client connection through the proxy that records what comes back and when it closes. */
  async function client(p: TcpProxy) {
    const sock = net.connect(p.port, '127.0.0.1');
    sock.setNoDelay(true);
    let got = '';
    let closed = false;
    let error: string | undefined;
    sock.on('data', (d) => (got += d.toString()));
    sock.on('error', (e) => (error = (e as NodeJS.ErrnoException).code ?? e.message));
    sock.on('close', () => (closed = true));
    await new Promise<void>((r, j) => {
      sock.once('connect', () => r());
      sock.once('error', j);
    });
    const until = async (cond: () => boolean, ms = 3000) => {
      const end = Date.now() + ms;
      while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
      return cond();
    };
    return { sock, got: () => got, closed: () => closed, error: () => error, until };
  }

  it('forwards; cut resets open connections and refuses new ones until heal', async () => {
    const p = await TcpProxy.start(`127.0.0.1:${port}`);
    try {
      const c = await client(p);
      c.sock.write('hello');
      expect(await c.until(() => c.got() === 'hello')).toBe(true);
      p.cut();
      expect(await c.until(() => c.closed())).toBe(true);
      const refused = net.connect(p.port, '127.0.0.1');
      const outcome = await new Promise<string>((r) => {
        refused.on('error', (e) => r((e as NodeJS.ErrnoException).code ?? 'error'));
        refused.on('close', () => r('closed'));
      });
      expect(['ECONNRESET', 'closed']).toContain(outcome);
      expect(p.refused).toBeGreaterThanOrEqual(1);
      p.heal();
      const again = await client(p);
      again.sock.write('back');
      expect(await again.until(() => again.got() === 'back')).toBe(true);
      again.sock.destroy();
    } finally {
      await p.close();
    }
  });

  it('blackhole keeps connections open and forwards nothing either way; heal resets them', async () => {
    const p = await TcpProxy.start(port);
    try {
      const c = await client(p);
      p.blackhole();
      c.sock.write('lost');
      expect(await c.until(() => c.got() !== '' || c.closed(), 300)).toBe(false); // silence, still open
      const late = await client(p); // new connections are accepted too, and hear nothing
      late.sock.write('x');
      expect(await late.until(() => late.got() !== '', 200)).toBe(false);
      p.heal();
      expect(await c.until(() => c.closed())).toBe(true);
      expect(c.got()).toBe('');
    } finally {
      await p.close();
    }
  });

  it('pause holds bytes and delivers them on heal; delay adds latency', async () => {
    const p = await TcpProxy.start(port);
    try {
      const c = await client(p);
      p.pause();
      c.sock.write('held');
      expect(await c.until(() => c.got() !== '', 300)).toBe(false);
      p.heal();
      expect(await c.until(() => c.got() === 'held')).toBe(true);
      p.delay(150);
      const t = Date.now();
      c.sock.write('slow');
      expect(await c.until(() => c.got() === 'heldslow')).toBe(true);
      expect(Date.now() - t).toBeGreaterThanOrEqual(280); // 150 ms each way
      c.sock.destroy();
    } finally {
      await p.close();
    }
  });
});

describe('EtcdCluster', () => {
  let etcd: EtcdCluster;
  beforeAll(async () => {
    etcd = await EtcdCluster.start(dataRoot);
  }, 60_000);
  afterAll(async () => {
    await etcd?.close();
  });

  it('three members behind proxies, one leader the others agree on; killing it elects another', async () => {
    expect(etcd.members).toHaveLength(3);
    expect(etcd.url('/p')).toBe(`etcd://${etcd.members.map((m) => m.proxy!.endpoint).join(',')}/p`);
    const leader = await etcd.leader();
    const st = await leader.status();
    expect(st!.leaderId).toBe(st!.memberId);
    await leader.kill();
    expect(leader.running).toBe(false);
    const next = await etcd.leader();
    expect(next).not.toBe(leader);
    await leader.start({ wait: false });
    await etcd.waitHealthy();
    expect((await leader.status())!.leaderId).toBe((await next.status())!.memberId);
  });

  it('a paused member answers nothing; resumed, it serves again', async () => {
    const m = etcd.members[0]!;
    m.pause();
    expect(await m.healthy(300)).toBe(false);
    m.resume();
    await etcd.waitHealthy();
    expect(await m.healthy()).toBe(true);
  });

  it('SIGTERM stops a member gracefully; it restarts on the same data', async () => {
    await etcd.etcdctl('put', 'fixture-key', 'v1');
    const m = etcd.members[1]!;
    await m.stop();
    await m.start();
    await etcd.waitHealthy();
    expect(await etcd.etcdctl('get', '--print-value-only', 'fixture-key')).toBe('v1\n');
  });
});

describe('ZooKeeperEnsemble', () => {
  let zk: ZooKeeperEnsemble;
  beforeAll(async () => {
    zk = await ZooKeeperEnsemble.start({ tickTime: 200, ...dataRoot });
  }, 90_000);
  afterAll(async () => {
    await zk?.close();
  });

  it('three nodes behind proxies, exactly one leader; killing it elects another', async () => {
    expect(zk.members).toHaveLength(3);
    expect(zk.url('/c')).toBe(`zk://${zk.members.map((m) => m.proxy!.endpoint).join(',')}/c`);
    const modes = await Promise.all(zk.members.map((m) => m.srvr()));
    expect(modes.filter((s) => s?.mode === 'leader')).toHaveLength(1);
    const leader = await zk.leader();
    await leader.kill();
    const next = await zk.leader();
    expect(next).not.toBe(leader);
    await leader.start({ wait: false });
    await zk.waitHealthy();
    expect((await leader.srvr())?.mode).toBe('follower');
  });
});

describe('no server outlives the process that started it', () => {
  const here = fileURLToPath(new URL('.', import.meta.url));
  const register = fileURLToPath(new URL('../helpers/ts-register.mjs', import.meta.url));
  const script = (how: string) => `
    import { EtcdCluster } from ${JSON.stringify(`${here}../../src/testing/cluster/index.ts`)};
    const c = await EtcdCluster.start({ size: 1, proxies: false });
    console.log(JSON.stringify({ pids: c.members.map((m) => m.pid), dir: c.members[0].dataDir }));
    ${how === 'exit' ? 'process.exit(0);' : 'setInterval(() => {}, 1000);'}
  `;

  for (const how of ['exit', 'kill -9'] as const) {
    it(`${how}: the etcd it started is gone, with its data`, async () => {
      const child = spawn(process.execPath, ['--import', register, '--input-type=module', '-e', script(how)], { stdio: ['ignore', 'pipe', 'inherit'] });
      const { pids, dir } = await new Promise<{ pids: number[]; dir: string }>((resolve, reject) => {
        let out = '';
        child.stdout!.on('data', (d: Buffer) => {
          out += d.toString();
          const line = out.split('\n').find((l) => l.startsWith('{'));
          if (line) resolve(JSON.parse(line) as { pids: number[]; dir: string });
        });
        child.on('exit', () => reject(new Error(`child exited before printing pids: ${out}`)));
      });
      expect(pids.every(alive)).toBe(true);
      if (how === 'kill -9') child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      expect(await waitGone(pids, 5000)).toEqual([]);
      const root = path.dirname(dir); // the cluster's temporary directory goes too
      for (let i = 0; i < 50 && existsSync(root); i++) await new Promise((r) => setTimeout(r, 100));
      expect(existsSync(root)).toBe(false);
    }, 60_000);
  }
});
