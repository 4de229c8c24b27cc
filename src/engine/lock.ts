import { createServer, connect } from 'node:net';
import { readFileSync, unlinkSync } from 'node:fs';
import { open, readFile, stat, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { UnavailableError } from '../core/errors.js';

/**
 * One writer per data dir, for the life of the process.
 *
 * On Linux the lock is an abstract Unix socket named after the directory's device and inode: the
 * kernel lets one process bind a name at a time and frees it when that process dies, however it
 * dies (kill -9 included). So a crash never leaves a stale lock behind, and two servers starting at
 * the same moment cannot both win. The holder answers a connection on the socket with who it is,
 * and also writes that to `LOCK` in the dir for people (the file is information, not the lock).
 *
 * Elsewhere (no abstract sockets) `LOCK` itself is the lock, created exclusively; one left by a
 * process that no longer runs is taken over. That fallback has a window in which two servers
 * starting together over a stale lock could both take it; Linux has none.
 *
 * Abstract socket names belong to a network namespace: two containers with separate network
 * namespaces sharing one data dir are not kept apart, nor are two hosts on a network filesystem.
 */
export interface DirLock {
  /** Give the dir up (idempotent). */
  release(): void;
}

interface Holder {
  pid: number;
  host: string;
  startedAt: string;
  argv: string[];
}

const LOCK_FILE = 'LOCK';

/** Lock `dir` for this process. `kind: 'file'` forces the LOCK-file lock (tests; other platforms). */
export async function lockDataDir(dir: string, kind: 'auto' | 'file' = 'auto'): Promise<DirLock> {
  const me: Holder = { pid: process.pid, host: hostname(), startedAt: new Date().toISOString(), argv: process.argv.slice(1, 4) };
  const body = JSON.stringify(me) + '\n';
  const file = join(dir, LOCK_FILE);
  if (process.platform === 'linux' && kind === 'auto') {
    const st = await stat(dir);
    const name = `\0roster-data-dir:${st.dev}:${st.ino}`;
    const server = createServer((c) => c.end(body));
    const bound = await new Promise<boolean>((resolve, reject) => {
      server.once('error', (e: NodeJS.ErrnoException) => {
        // A kernel without abstract sockets (some sandboxes) refuses every bind alike: use the file.
        if (e.code !== 'EADDRINUSE') return resolve(false);
        void describeHolder(name, file).then((who) => reject(inUse(dir, who)), reject);
      });
      server.listen(name, () => resolve(true));
    });
    if (bound) {
      server.unref();
      await writeFile(file, body).catch(() => undefined); // information only
      return releaser(file, body, () => server.close());
    }
  }
  return fileLock(dir, file, body);
}

/** Give the dir up once: remove `file` if it is still ours (it never names the next holder
 *  wrongly), then `after` (closing the socket frees the name at once). */
function releaser(file: string, body: string, after: () => void = () => undefined): DirLock {
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      try {
        if (readFileSync(file, 'utf8') === body) unlinkSync(file);
      } catch {
        // already gone: it is information only
      }
      after();
    },
  };
}

function inUse(dir: string, who: string): UnavailableError {
  return new UnavailableError(`data dir ${dir} is in use by ${who}; one server per data dir (stop it first, or use another --data-dir)`, {
    details: { dataDir: dir },
  });
}

/** The holder as it describes itself over the socket, else as its LOCK file does. */
async function describeHolder(name: string, file: string): Promise<string> {
  const told = await new Promise<string>((resolve) => {
    const c = connect(name);
    let text = '';
    const t = setTimeout(() => c.destroy(), 2000);
    c.setEncoding('utf8');
    c.on('data', (d: string) => (text += d));
    c.on('close', () => {
      clearTimeout(t);
      resolve(text);
    });
    c.on('error', () => undefined);
  });
  const fromFile = told || (await readFile(file, 'utf8').catch(() => ''));
  try {
    const h = JSON.parse(fromFile) as Holder;
    return `roster server pid ${h.pid} on ${h.host} (started ${h.startedAt})`;
  } catch {
    return 'another roster server (it did not say which)';
  }
}

async function fileLock(dir: string, file: string, body: string): Promise<DirLock> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      const fh = await open(file, 'wx');
      await fh.writeFile(body);
      await fh.close();
      return releaser(file, body);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const text = await readFile(file, 'utf8').catch(() => '');
      let holder: Holder | undefined;
      try {
        holder = JSON.parse(text) as Holder;
      } catch {
        holder = undefined;
      }
      if (holder && holder.host === hostname() && !alive(holder.pid)) {
        await unlink(file).catch(() => undefined); // stale: its process is gone
        continue;
      }
      throw inUse(dir, holder ? `roster server pid ${holder.pid} on ${holder.host} (started ${holder.startedAt}; if no such process runs, remove ${file})` : `the holder of ${file}`);
    }
  }
  throw inUse(dir, `the holder of ${file}`);
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
