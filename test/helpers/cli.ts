/**
 * The `roster` command as a user runs it: real processes of dist/cli/bin.js (built by `npm test`'s
 * pretest), with their stdout lines timestamped and bounded waits for a line.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export const BIN = fileURLToPath(new URL('../../dist/cli/bin.js', import.meta.url));

export function requireBuilt(): void {
  if (!existsSync(BIN)) throw new Error(`${BIN} is missing: run \`npm run build\` first (npm test does)`);
}

/** A clean environment: no ROSTER_* from the developer's shell, no config file. */
export function cliEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('ROSTER_')) env[k] = v;
  return { ...env, XDG_CONFIG_HOME: '/nonexistent-roster-test-config', ...extra };
}

/** Every process started here: killed when the test process exits, so a failed or timed-out test
 *  never leaves a `roster server` or `register` behind. */
const live = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of live) c.kill('SIGKILL');
});

export class Proc {
  readonly child: ChildProcess;
  readonly lines: { line: string; at: number }[] = [];
  stderr = '';
  readonly startedAt = performance.now();
  private waiters: (() => void)[] = [];
  readonly exit: Promise<number | null>;
  constructor(args: string[], opts: { env?: Record<string, string>; stdin?: string } = {}) {
    this.child = spawn(process.execPath, [BIN, ...args], { env: cliEnv(opts.env), stdio: [opts.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    live.add(this.child);
    this.child.once('exit', () => live.delete(this.child));
    if (opts.stdin !== undefined) this.child.stdin!.end(opts.stdin);
    let buf = '';
    this.child.stdout!.on('data', (d: Buffer) => {
      const at = performance.now();
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        this.lines.push({ line: buf.slice(0, i), at });
        buf = buf.slice(i + 1);
      }
      this.wake();
    });
    this.child.stderr!.on('data', (d: Buffer) => {
      this.stderr += d.toString();
      this.wake();
    });
    // 'close': after the exit AND the end of stdout / stderr, so no line is missed.
    this.exit = new Promise((res) => this.child.on('close', (code, sig) => res(code ?? (sig ? 128 : null))));
  }
  private wake(): void {
    for (const w of this.waiters.splice(0)) w();
  }
  get stdout(): string {
    return this.lines.map((l) => l.line).join('\n');
  }
  private async until<T>(find: () => T | undefined, timeoutMs: number, what: string): Promise<T> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const hit = find();
      if (hit !== undefined) return hit;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${what} not seen within ${timeoutMs} ms; stdout: ${JSON.stringify(this.lines.map((l) => l.line))}; stderr: ${this.stderr}`);
      await new Promise<void>((res) => {
        const t = setTimeout(res, left);
        this.waiters.push(() => {
          clearTimeout(t);
          res();
        });
      });
    }
  }
  /** Wait for a stdout line matching pred (bounded); returns it with its arrival time. */
  waitLine(pred: (l: string) => boolean, timeoutMs = 10_000): Promise<{ line: string; at: number }> {
    return this.until(() => this.lines.find((l) => pred(l.line)), timeoutMs, 'stdout line');
  }
  /** Wait until stderr matches (bounded). */
  waitStderr(re: RegExp, timeoutMs = 10_000): Promise<string> {
    return this.until(() => (re.test(this.stderr) ? this.stderr : undefined), timeoutMs, `stderr ${re}`);
  }
  /** Lines after the first `n` (JSON-parsed). */
  json<T = Record<string, unknown>>(): T[] {
    return this.lines.map((l) => JSON.parse(l.line) as T);
  }
}

export interface RunResult {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export async function run(args: string[], opts: { env?: Record<string, string>; stdin?: string } = {}): Promise<RunResult> {
  const p = new Proc(args, opts);
  const code = await p.exit;
  return { code, stdout: p.stdout, stderr: p.stderr, ms: performance.now() - p.startedAt };
}

/** Commands against one backend, with every long-running process killed by `killAll()`. */
export class CliSession {
  readonly procs: Proc[] = [];
  constructor(private readonly url: () => string) {}
  args(...args: string[]): string[] {
    return ['--backend', this.url(), ...args];
  }
  spawn(...args: string[]): Proc {
    const p = new Proc(this.args(...args));
    this.procs.push(p);
    return p;
  }
  run(...args: string[]): Promise<RunResult> {
    return run(this.args(...args));
  }
  killAll(): void {
    for (const p of this.procs.splice(0)) p.child.kill('SIGKILL');
  }
}
