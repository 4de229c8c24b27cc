/**
 * Worker processes for the cross-process recipe checks: each runs a TypeScript file from
 * test/recipes/workers through the repository's loader (test/helpers/ts-register.mjs), gets its
 * config as JSON in ROSTER_WORKER, and reports one JSON line per event on stdout.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = fileURLToPath(new URL('.', import.meta.url));
const REGISTER = pathToFileURL(join(here, '..', 'helpers', 'ts-register.mjs')).href;

export interface WorkerEvent {
  id: string;
  pid: number;
  t: number;
  ev: string;
  [k: string]: unknown;
}

const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

export class Worker {
  readonly child: ChildProcess;
  readonly events: WorkerEvent[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private listeners = new Set<(e: WorkerEvent) => void>();

  constructor(
    script: string,
    readonly id: string,
    config: Record<string, unknown>,
  ) {
    this.child = spawn(process.execPath, ['--import', REGISTER, join(here, 'workers', script)], {
      env: { ...process.env, ROSTER_WORKER: JSON.stringify({ ...config, id }) },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    live.add(this.child);
    let buf = '';
    this.child.stdout!.setEncoding('utf8');
    this.child.stdout!.on('data', (d: string) => {
      buf += d;
      let i: number;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        if (!line.trim()) continue;
        let e: WorkerEvent;
        try {
          e = JSON.parse(line) as WorkerEvent;
        } catch {
          this.stderr += `unparsable stdout line: ${line}\n`;
          continue;
        }
        this.events.push(e);
        for (const l of this.listeners) l(e);
      }
    });
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (d: string) => {
      if (this.stderr.length < 20_000) this.stderr += d;
    });
    this.exited = new Promise((resolve) => {
      this.child.once('exit', (code, signal) => {
        live.delete(this.child);
        resolve({ code, signal });
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Resolve with the first event (already seen or future) matching `pred`, or throw after `ms`. */
  waitFor(pred: (e: WorkerEvent) => boolean, ms: number, what: string): Promise<WorkerEvent> {
    const seen = this.events.find(pred);
    if (seen) return Promise.resolve(seen);
    return new Promise((resolve, reject) => {
      const t = setTimeout(() => {
        this.listeners.delete(on);
        reject(new Error(`worker ${this.id}: no ${what} within ${ms} ms; stderr: ${this.stderr.slice(-2000)}`));
      }, ms);
      const on = (e: WorkerEvent) => {
        if (!pred(e)) return;
        clearTimeout(t);
        this.listeners.delete(on);
        resolve(e);
      };
      this.listeners.add(on);
    });
  }

  signal(sig: NodeJS.Signals): void {
    if (this.alive) this.child.kill(sig);
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGCONT');
    this.child.kill('SIGTERM');
    const t = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(t);
  }

  async kill(): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGKILL');
    await this.exited;
  }
}
