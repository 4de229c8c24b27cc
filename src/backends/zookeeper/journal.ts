/**
 * A process-wide journal of the writes this process made to one ZooKeeper ensemble and saw
 * acknowledged, with their exact zxids.
 *
 * ZooKeeper keeps no history and its watches only say "something changed here", so a watcher
 * that re-reads sees the latest state: a key changed three times between two reads shows up once,
 * and a delete's exact zxid is unknown. The journal lets the backend do better, but only where
 * ZooKeeper's own counters *prove* the journal complete, never by guessing:
 *
 * - Data versions of one znode incarnation (same czxid) are consecutive (stat.version). A run of
 *   journalled versions v..V whose last entry has the mzxid and value just read is gap-free, so a
 *   watcher can emit each intermediate version instead of one coalesced put.
 * - A directory's cversion counts every child create and delete since it was created (0 at its
 *   czxid). If the journal holds exactly `cversion` child changes of D in (D.czxid, D.pzxid], it
 *   holds all of them: deletes under D are then known exactly, which is what
 *   `watch({ fromRevision })` needs (see mirror.ts `resume`).
 *
 * Writes by other processes, and deletes ZooKeeper makes itself (ephemeral nodes of an ended
 * session), are not in the journal: the counters then do not add up and the backend falls back to
 * coalescing (live watch) or to a `reset` (resume). Bounded in entries and value bytes; evicting a
 * directory's child entry marks that directory truncated (no longer provable).
 */

export interface JVersion {
  czxid: number;
  /** ZooKeeper stat.version (the contract's version is this + 1). */
  version: number;
  mzxid: number;
  /** null = the data was set to null (the key became a plain directory). */
  value: string | null;
  session: string | undefined;
}

export interface JChild {
  zxid: number;
  kind: 'create' | 'delete';
  name: string;
  /** czxid of the child incarnation created or deleted. */
  czxid: number;
  /** Whether the child was a key (had data) rather than a plain directory. */
  isKey: boolean;
  /** For the delete of a key: the version it was deleted at (so the versions written just before
   *  it can be filled in too, when the journal holds them). */
  last?: { version: number; mzxid: number; value: string };
}

type Entry = { t: 'v'; path: string; e: JVersion; bytes: number } | { t: 'c'; path: string; e: JChild; bytes: number };

const MAX_ENTRIES = 50_000;
const MAX_BYTES = 16 * 1024 * 1024;

export class Journal {
  private versions = new Map<string, JVersion[]>();
  private children = new Map<string, { list: JChild[]; truncated: boolean }>();
  private fifo: Entry[] = [];
  private head = 0;
  private bytes = 0;
  private inflight = new Map<string, number>();
  private waiters = new Set<() => void>();

  addVersion(path: string, e: JVersion): void {
    let l = this.versions.get(path);
    if (!l) this.versions.set(path, (l = []));
    if (l.some((x) => x.czxid === e.czxid && x.version === e.version)) return;
    l.push(e);
    this.push({ t: 'v', path, e, bytes: 64 + path.length + (e.value?.length ?? 0) });
  }

  addChild(dir: string, e: JChild): void {
    let d = this.children.get(dir);
    if (!d) this.children.set(dir, (d = { list: [], truncated: false }));
    if (d.list.some((x) => x.zxid === e.zxid && x.kind === e.kind && x.name === e.name)) return;
    d.list.push(e);
    this.push({ t: 'c', path: dir, e, bytes: 64 + dir.length + e.name.length + (e.last?.value.length ?? 0) });
  }

  /** Journalled versions of one incarnation, by stat.version. */
  versionsOf(path: string, czxid: number): Map<number, JVersion> {
    const out = new Map<number, JVersion>();
    for (const v of this.versions.get(path) ?? []) if (v.czxid === czxid) out.set(v.version, v);
    return out;
  }

  childrenOf(dir: string): { readonly list: readonly JChild[]; readonly truncated: boolean } | undefined {
    return this.children.get(dir);
  }

  /** This process's delete of incarnation `czxid` of `dir/name`, if it made it. */
  deleteOf(dir: string, name: string, czxid: number): JChild | undefined {
    const d = this.children.get(dir);
    if (!d) return undefined;
    for (const e of d.list) if (e.kind === 'delete' && e.name === name && e.czxid === czxid) return e;
    return undefined;
  }

  /** Mark writes to `paths` in flight; call the returned function once the reply is journalled. */
  begin(paths: readonly string[]): () => void {
    for (const p of paths) this.inflight.set(p, (this.inflight.get(p) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      for (const p of paths) {
        const n = (this.inflight.get(p) ?? 1) - 1;
        if (n <= 0) this.inflight.delete(p);
        else this.inflight.set(p, n);
      }
      for (const w of [...this.waiters]) w();
    };
  }

  busy(paths: Iterable<string>): boolean {
    for (const p of paths) if (this.inflight.has(p)) return true;
    return false;
  }

  /** Resolve once no write to `paths` is in flight, or after `timeoutMs` (whichever first). */
  idle(paths: readonly string[], timeoutMs: number): Promise<void> {
    if (!this.busy(paths)) return Promise.resolve();
    return new Promise((resolve) => {
      const check = () => {
        if (this.busy(paths)) return;
        finish();
      };
      const finish = () => {
        clearTimeout(t);
        this.waiters.delete(check);
        resolve();
      };
      const t = setTimeout(finish, timeoutMs);
      t.unref();
      this.waiters.add(check);
    });
  }

  private push(en: Entry): void {
    this.fifo.push(en);
    this.bytes += en.bytes;
    while (this.fifo.length - this.head > MAX_ENTRIES || this.bytes > MAX_BYTES) this.evictOne();
    if (this.head > 4096 && this.head * 2 > this.fifo.length) {
      this.fifo = this.fifo.slice(this.head);
      this.head = 0;
    }
  }

  private evictOne(): void {
    const en = this.fifo[this.head];
    if (!en) return;
    this.fifo[this.head] = undefined as unknown as Entry;
    this.head++;
    this.bytes -= en.bytes;
    if (en.t === 'v') {
      const l = this.versions.get(en.path);
      if (!l) return;
      const i = l.indexOf(en.e);
      if (i >= 0) l.splice(i, 1);
      if (l.length === 0) this.versions.delete(en.path);
    } else {
      const d = this.children.get(en.path);
      if (!d) return;
      const i = d.list.indexOf(en.e);
      if (i >= 0) d.list.splice(i, 1);
      d.truncated = true;
    }
  }
}

/** One journal per ensemble (identified by its sorted server list), shared by every backend
 *  instance of this process: a watcher in one instance benefits from writes made by another. */
const journals = new Map<string, Journal>();

export function journalFor(ensemble: string): Journal {
  let j = journals.get(ensemble);
  if (!j) journals.set(ensemble, (j = new Journal()));
  return j;
}
