/**
 * Third-party programs as the other party in interop tests: the Go programs under
 * test/interop/go/<prog>/ (built with Debian's golang-go 1.19 against golang-etcd-server-dev and
 * golang-google-grpc-dev, GO111MODULE=off GOPATH=/usr/share/gocode) and the Java programs under
 * test/interop/java/ (javac against Debian's Curator, ZooKeeper and Jackson jars).
 *
 * Builds are cached in $ROSTER_INTEROP_CACHE (default <tmpdir>/roster-interop-cache), keyed by a
 * hash of the sources and the toolchain version, so a test run builds each program at most once
 * and later runs reuse it. A build writes into a private directory and renames it into place, so
 * two test files building at once never see a half-written binary.
 *
 * `LineProcess` runs a program and reads its stdout line by line; `waitLine` waits (bounded) for
 * a line matching a pattern. Every process started here is killed if the test process exits
 * first.
 */
import { execFile, spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const GO_DIR = join(REPO, 'test/interop/go');
const JAVA_DIR = join(REPO, 'test/interop/java');
export const CACHE = process.env.ROSTER_INTEROP_CACHE ?? join(tmpdir(), 'roster-interop-cache');
const GOPATH = '/usr/share/gocode';

/** Jars the Java programs compile and run against (Debian packages libcurator-*-java, zookeeper,
 *  libjackson2-*, libguava-java, libslf4j-java). */
export const JAVA_JARS = [
  'curator-client',
  'curator-framework',
  'curator-recipes',
  'curator-x-discovery',
  'zookeeper',
  'zookeeper-jute',
  'guava',
  'jackson-annotations',
  'jackson-core',
  'jackson-databind',
  'slf4j-api',
  'slf4j-nop',
].map((j) => `/usr/share/java/${j}.jar`);

export function goAvailable(): boolean {
  return existsSync('/usr/bin/go') && existsSync(join(GOPATH, 'src/go.etcd.io/etcd/clientv3/naming/resolver'));
}

export function javaAvailable(): boolean {
  return existsSync('/usr/bin/javac') && JAVA_JARS.every((j) => existsSync(j));
}

function hashFiles(files: string[], extra: string): string {
  const h = createHash('sha256').update(extra);
  for (const f of files.sort()) h.update(f).update('\0').update(readFileSync(f)).update('\0');
  return h.digest('hex').slice(0, 16);
}

/** Build (or reuse) one cached artefact: `make(tmpDir)` fills a private directory that is then
 *  renamed to `<CACHE>/<name>-<hash>`. */
async function cached(name: string, hash: string, make: (dir: string) => Promise<void>): Promise<string> {
  const dir = join(CACHE, `${name}-${hash}`);
  if (existsSync(join(dir, '.done'))) return dir;
  await mkdir(CACHE, { recursive: true });
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  await rm(tmp, { recursive: true, force: true });
  await mkdir(tmp, { recursive: true });
  try {
    await make(tmp);
    await execFileP('touch', [join(tmp, '.done')]);
    await rename(tmp, dir).catch(async (e: NodeJS.ErrnoException) => {
      // Another process finished the same build first: use theirs.
      if (!existsSync(join(dir, '.done'))) throw e;
    });
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return dir;
}

/** Path of the built Go program test/interop/go/<prog>. */
export async function buildGo(prog: string): Promise<string> {
  const src = join(GO_DIR, prog);
  const files = readdirSync(src).filter((f) => f.endsWith('.go')).map((f) => join(src, f));
  const { stdout: version } = await execFileP('go', ['version']);
  const dir = await cached(`go-${prog}`, hashFiles(files, version), async (tmp) => {
    await execFileP('go', ['build', '-o', join(tmp, prog), '.'], {
      cwd: src,
      env: { ...process.env, GO111MODULE: 'off', GOPATH, GOCACHE: join(CACHE, 'gocache'), GOFLAGS: '' },
      timeout: 300_000,
    }).catch((e: { stderr?: string; message: string }) => {
      throw new Error(`go build ${prog} failed: ${e.stderr ?? e.message}`);
    });
  });
  return join(dir, prog);
}

/** Compile every test/interop/java/*.java; returns the classpath to run them with. */
export async function buildJava(): Promise<string> {
  const files = readdirSync(JAVA_DIR).filter((f) => f.endsWith('.java')).map((f) => join(JAVA_DIR, f));
  const { stderr: version } = await execFileP('javac', ['-version']).catch(() => ({ stderr: 'javac' }));
  const dir = await cached('java', hashFiles(files, version + JAVA_JARS.join(':')), async (tmp) => {
    await execFileP('javac', ['-nowarn', '-encoding', 'UTF-8', '-cp', JAVA_JARS.join(':'), '-d', tmp, ...files], { timeout: 300_000 }).catch(
      (e: { stderr?: string; message: string }) => {
        throw new Error(`javac failed: ${e.stderr ?? e.message}`);
      },
    );
  });
  return [dir, ...JAVA_JARS].join(':');
}

const running = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of running) c.kill('SIGKILL');
});

/** A child process whose stdout is read as lines. */
export class LineProcess {
  readonly lines: string[] = [];
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private exitInfo: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  private waiters = new Set<() => void>();
  readonly proc: ChildProcess;

  constructor(
    readonly label: string,
    command: string,
    args: string[],
    opts: SpawnOptions = {},
  ) {
    this.proc = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'], ...opts });
    running.add(this.proc);
    let buf = '';
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (d: string) => {
      buf += d;
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        this.lines.push(buf.slice(0, i));
        buf = buf.slice(i + 1);
      }
      this.wake();
    });
    this.proc.stderr!.setEncoding('utf8');
    this.proc.stderr!.on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-20_000);
    });
    this.proc.stdin!.on('error', () => undefined); // the program may exit before reading stdin
    this.exited = new Promise((resolve) => {
      const done = (code: number | null, signal: NodeJS.Signals | null) => {
        running.delete(this.proc);
        this.exitInfo = { code, signal };
        this.wake();
        resolve(this.exitInfo);
      };
      this.proc.once('exit', done);
      this.proc.once('error', (e) => {
        this.stderr += `\nspawn error: ${String(e)}`;
        done(127, null);
      });
    });
  }

  private wake(): void {
    for (const w of [...this.waiters]) w();
  }

  /** Wait until `cond()` holds, checking after every chunk of output (bounded by `timeoutMs`). */
  async waitFor(cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (cond()) return;
      if (this.exitInfo) throw new Error(`${this.label} exited (${this.exitInfo.code ?? this.exitInfo.signal}) before ${what}; stderr:\n${this.stderr.slice(-3000)}`);
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`${this.label}: no ${what} within ${timeoutMs} ms; last lines: ${this.lines.slice(-5).join(' | ')}; stderr:\n${this.stderr.slice(-3000)}`);
      await new Promise<void>((resolve) => {
        const w = () => {
          clearTimeout(t);
          this.waiters.delete(w);
          resolve();
        };
        const t = setTimeout(w, left);
        this.waiters.add(w);
      });
    }
  }

  /** The first line at index >= `from` matching `re` (and its index), waiting at most `timeoutMs`. */
  async waitLine(re: RegExp, timeoutMs = 20_000, from = 0): Promise<{ line: string; index: number }> {
    let hit = -1;
    await this.waitFor(
      () => {
        for (let i = from; i < this.lines.length; i++) if (re.test(this.lines[i]!)) return (hit = i) >= 0;
        from = Math.max(from, this.lines.length);
        return false;
      },
      timeoutMs,
      `line matching ${re}`,
    );
    return { line: this.lines[hit]!, index: hit };
  }

  /** Write one line to the program's stdin. */
  send(line: string): void {
    this.proc.stdin!.write(line + '\n');
  }

  /** Close stdin (the programs here shut down cleanly on EOF) and wait for the exit. */
  async end(timeoutMs = 10_000): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    this.proc.stdin!.end();
    const t = setTimeout(() => this.proc.kill('SIGKILL'), timeoutMs);
    try {
      return await this.exited;
    } finally {
      clearTimeout(t);
    }
  }

  /** kill -9 and wait for the exit. */
  async kill(): Promise<void> {
    if (!this.exitInfo) this.proc.kill('SIGKILL');
    await this.exited;
  }
}
