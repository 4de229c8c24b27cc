/**
 * Child processes of the test fixtures (etcd members, ZooKeeper JVMs) and the small helpers they
 * share: free loopback ports, bounded polling, signalling a process and waiting for it to be gone.
 *
 * No leaked servers: every tracked child is killed when this process exits normally, and a tiny
 * watchdog shell per child kills it once this process is gone by any means (test runners kill
 * their workers with signals, and `exit` handlers do not run then). The watchdog polls once a
 * second; that is its whole job.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import net from 'node:net';

const children = new Set<ChildProcess>();
/** Data dirs to remove when this process exits (the fixtures' temporary directories). */
const dirs = new Set<string>();
let exitHook = false;

function hookExit(): void {
  if (exitHook) return;
  exitHook = true;
  process.once('exit', () => {
    for (const c of children) c.kill('SIGKILL'); // a SIGSTOPped child dies on SIGKILL too
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });
}

/** Remove `dir` when this process exits, unless `untrackDir` was called (it was cleaned up). */
export function trackDir(dir: string): void {
  hookExit();
  dirs.add(dir);
}
export function untrackDir(dir: string): void {
  dirs.delete(dir);
}

/**
 * Kill `child` when this process exits (normally or not). With `dir`, the watchdog also removes
 * that directory once this process is gone (after a kill -9 of this process nothing else would).
 * Returns the child.
 */
export function track<C extends ChildProcess>(child: C, opts: { dir?: string } = {}): C {
  hookExit();
  children.add(child);
  const rm = opts.dir ? `; rm -rf '${opts.dir.replace(/'/g, `'\\''`)}'` : '';
  const dog = child.pid
    ? spawn(
        'sh',
        [
          '-c',
          `while kill -0 ${process.pid} 2>/dev/null && kill -0 ${child.pid} 2>/dev/null; do sleep 1; done; ` +
            `if ! kill -0 ${process.pid} 2>/dev/null; then kill -9 ${child.pid} 2>/dev/null${rm}; fi`,
        ],
        { stdio: 'ignore', detached: true },
      )
    : undefined;
  dog?.unref();
  dog?.on('error', () => undefined);
  child.once('exit', () => {
    children.delete(child);
    dog?.kill('SIGKILL');
  });
  return child;
}

/** A free TCP port on `host` (bound to 0, read, released; the caller binds it right after). */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.once('error', reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr === 'object' ? resolve(addr.port) : reject(new Error('no free port'))));
    });
  });
}

/**
 * Poll `probe` until it returns a value other than undefined (bounded). A fixture waits on a real
 * condition (a health answer, a leader); the interval only paces the questions.
 */
export async function waitFor<T>(
  what: string,
  probe: () => Promise<T | undefined> | T | undefined,
  opts: { timeoutMs?: number; intervalMs?: number; detail?: () => string | Promise<string> } = {},
): Promise<T> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  const deadline = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      lastErr = e;
    }
    if (Date.now() > deadline) {
      const detail = opts.detail ? `\n${await opts.detail()}` : '';
      const why = lastErr ? ` (last error: ${(lastErr as Error).message ?? String(lastErr)})` : '';
      throw new Error(`${what}: not within ${timeoutMs} ms${why}${detail}`);
    }
    await new Promise((r) => setTimeout(r, opts.intervalMs ?? 50));
  }
}

/** A child that can be signalled and awaited; `exited` resolves once when it is gone. */
export class Child {
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private _gone = false;
  private _paused = false;

  constructor(
    readonly proc: ChildProcess,
    opts: { dir?: string } = {},
  ) {
    track(proc, opts);
    this.exited = new Promise((resolve) => {
      proc.once('exit', (code, signal) => {
        this._gone = true;
        resolve({ code, signal });
      });
      proc.once('error', () => {
        this._gone = true;
        resolve({ code: null, signal: null });
      });
    });
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }
  get gone(): boolean {
    return this._gone;
  }
  get paused(): boolean {
    return this._paused && !this._gone;
  }

  /**
   * Send `signal` and wait until the process is gone. SIGKILL is final; for a graceful signal the
   * process gets `graceMs` and is then killed (so a stuck shutdown cannot hang a test).
   */
  async kill(signal: NodeJS.Signals = 'SIGKILL', graceMs = 15_000): Promise<void> {
    if (this._gone) return;
    if (this._paused && signal !== 'SIGKILL') this.resume(); // a stopped process cannot act on SIGTERM
    this.proc.kill(signal);
    if (signal === 'SIGKILL') return void (await this.exited);
    const t = setTimeout(() => this.proc.kill('SIGKILL'), graceMs);
    try {
      await this.exited;
    } finally {
      clearTimeout(t);
    }
  }

  /** SIGSTOP: the process keeps its sockets open and answers nothing. */
  pause(): void {
    if (this._gone || this._paused) return;
    this.proc.kill('SIGSTOP');
    this._paused = true;
  }

  /** SIGCONT. */
  resume(): void {
    if (this._gone || !this._paused) return;
    this.proc.kill('SIGCONT');
    this._paused = false;
  }
}

/** Send a ZooKeeper four-letter command; resolves with the answer ('' when closed unanswered). */
export function fourLetter(port: number, cmd: string, timeoutMs = 2000, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host, port });
    let out = '';
    const t = setTimeout(() => {
      sock.destroy();
      reject(new Error(`4lw ${cmd} on ${port}: no answer within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.on('connect', () => sock.write(cmd));
    sock.on('data', (d: Buffer) => (out += d.toString()));
    sock.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    sock.on('close', () => {
      clearTimeout(t);
      resolve(out);
    });
  });
}
