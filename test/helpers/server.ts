/**
 * Real roster servers for tests: in-process (startServer on a free port, temp data dir) or in a
 * child process that can be SIGKILLed and restarted on the same port and data dir.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { startServer, type RosterServer, type ServerOptions } from '../../src/server/index.js';

const here = fileURLToPath(new URL('.', import.meta.url));
const REGISTER = pathToFileURL(join(here, 'ts-register.mjs')).href;
const CHILD = join(here, 'server-child.ts');

export async function tempDir(name = 'roster'): Promise<string> {
  return mkdtemp(join(tmpdir(), `${name}-`));
}

export interface InProcessServer {
  server: RosterServer;
  url: string;
  dataDir: string;
  /** Close the server and remove its data dir. */
  cleanup(): Promise<void>;
}

export async function startInProcess(opts: Omit<ServerOptions, 'port' | 'dataDir'> = {}): Promise<InProcessServer> {
  const dataDir = await tempDir('roster-srv');
  const server = await startServer({ ...opts, port: 0, dataDir });
  return {
    server,
    url: server.url,
    dataDir,
    cleanup: async () => {
      await server.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

export interface ServerProcessOptions {
  dataDir?: string;
  port?: number;
  /** Passed to startServer in the child (JSON-serialisable options only). */
  options?: Omit<ServerOptions, 'port' | 'dataDir' | 'onError'>;
  startTimeoutMs?: number;
  /** Extra environment for the child (e.g. ROSTER_FAULTS); start(env) replaces it for later starts. */
  env?: Record<string, string>;
}

/** A roster server in a child process (test/helpers/server-child.ts). */
export class ServerProcess {
  private child: ChildProcess | undefined;
  private exited: Promise<void> = Promise.resolve();
  port = 0;
  url = '';
  /** stderr of the current child (for failure messages). */
  stderr = '';
  restarts = 0;

  private constructor(
    readonly dataDir: string,
    private readonly ownsDir: boolean,
    private readonly opts: ServerProcessOptions,
  ) {}

  static async start(opts: ServerProcessOptions = {}): Promise<ServerProcess> {
    const dataDir = opts.dataDir ?? (await tempDir('roster-child'));
    const p = new ServerProcess(dataDir, opts.dataDir === undefined, opts);
    await p.spawn(opts.port ?? 0);
    return p;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** Resolves when the current child has exited (by itself, e.g. killed by ROSTER_FAULTS, or by kill()). */
  waitExit(): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const c = this.child;
    return this.exited.then(() => ({ code: c?.exitCode ?? null, signal: c?.signalCode ?? null }));
  }

  private spawn(port: number): Promise<void> {
    const env = { ...process.env, ...this.opts.env, ROSTER_TEST_SERVER: JSON.stringify({ ...this.opts.options, port, dataDir: this.dataDir }) };
    const child = spawn(process.execPath, ['--import', REGISTER, CHILD], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    children.add(child);
    this.stderr = '';
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (d: string) => {
      if (this.stderr.length < 20_000) this.stderr += d;
    });
    this.exited = new Promise<void>((resolve) => {
      child.once('exit', () => {
        children.delete(child);
        resolve();
      });
    });
    const timeoutMs = this.opts.startTimeoutMs ?? 30_000;
    return new Promise<void>((resolve, reject) => {
      let out = '';
      const t = setTimeout(() => {
        child.kill('SIGKILL');
        reject(new Error(`server child did not start within ${timeoutMs} ms; stderr: ${this.stderr}`));
      }, timeoutMs);
      const onExit = (code: number | null, sig: string | null) => {
        clearTimeout(t);
        reject(new Error(`server child exited (code ${code}, signal ${sig}) before listening; stderr: ${this.stderr}`));
      };
      child.once('exit', onExit);
      child.stdout!.setEncoding('utf8');
      child.stdout!.on('data', (d: string) => {
        out += d;
        const m = /LISTENING (\S+)\n/.exec(out);
        if (!m) return;
        clearTimeout(t);
        child.off('exit', onExit);
        this.url = m[1]!;
        this.port = Number(new URL(this.url).port);
        resolve();
      });
    });
  }

  /** Send a signal and wait for the process to exit. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const c = this.child;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    c.kill(signal);
    await this.exited;
  }

  /** Start again on the same port and data dir (after kill()); `env` replaces the extra environment. */
  async start(env?: Record<string, string>): Promise<void> {
    if (env) this.opts.env = env;
    await this.spawn(this.port);
  }

  /** kill -9, then start again on the same port and data dir. */
  async restart(): Promise<void> {
    await this.kill('SIGKILL');
    this.restarts++;
    await this.start();
  }

  /** Graceful stop (SIGTERM; SIGKILL after 10 s), then remove the data dir if we created it. */
  async cleanup(): Promise<void> {
    const c = this.child;
    if (c && c.exitCode === null && c.signalCode === null) {
      const t = setTimeout(() => c.kill('SIGKILL'), 10_000);
      await this.kill('SIGTERM');
      clearTimeout(t);
    }
    if (this.ownsDir) await rm(this.dataDir, { recursive: true, force: true });
  }
}
