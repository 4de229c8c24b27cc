import type { PutOptions } from '../../contract/types.js';
import type { DeleteResult, PutResult } from '../../core/kv.js';
import { backoff, sleep } from '../../core/async.js';
import { ConflictError, isRosterError, UnavailableError, UnsupportedError } from '../../core/errors.js';
import { isZk, MODE, OP, wasNotSent, ZK, type Acl, type ZkConn, type ZStat } from './conn.js';
import type { Journal } from './journal.js';
import { toKv } from './mirror.js';

/**
 * Conditional writes on ZooKeeper: the contract's put (create-if-absent, compare-and-set,
 * session binding) and delete, built from create / setData / delete / multi at a read version.
 *
 * - put: create (ifAbsent, ifVersion 0; NODE_EXISTS → CONFLICT), setData with the expected
 *   version (ifVersion N → stat.version N-1; BAD_VERSION → CONFLICT), and for unconditional puts
 *   whichever of the two applies, retrying on the NO_NODE / NODE_EXISTS races. A ZooKeeper node
 *   cannot change owner: a put that binds an existing key to another session (or a session-bound key
 *   to none) replaces the znode atomically (multi: delete at the read version + create), so the
 *   key gets a new incarnation (version 1, new createRevision) with no moment where it is absent.
 * - Parents are created on demand as persistent znodes with null data.
 * - createSequential: EPHEMERAL_SEQUENTIAL create through the session's connection, with Curator's
 *   protection: the caller's name prefix is unique, so after a create whose reply was lost the
 *   node, if it was made, is found among the parent's children by that prefix and adopted.
 * - Every write is recorded in the process-wide journal (journal.ts) with its exact zxid, so the
 *   mirror can emit exact delete revisions and intermediate versions.
 */
export interface WriteHost {
  /** Contract key (or '' for the root) → absolute znode path. */
  toZk(rel: string): string;
  readonly journal: Journal;
  /** ACL of the znodes roster creates. */
  readonly acl: readonly Acl[];
}

interface Read {
  zxid: number;
  data: Buffer | null;
  stat: ZStat;
}

/** Give up on a write that keeps racing concurrent changes after this many attempts. */
const MAX_ATTEMPTS = 16;

export function parentPath(p: string): string {
  const i = p.lastIndexOf('/');
  return i <= 0 ? '/' : p.slice(0, i);
}
function baseName(p: string): string {
  return p.slice(p.lastIndexOf('/') + 1);
}

export class ZkWrites {
  constructor(private readonly host: WriteHost) {}

  /** Put through `c` (the shared connection, or the owning session's for a session-bound key). */
  async putOn(c: ZkConn, key: string, value: string, data: Buffer, opts: PutOptions, owner: string | undefined): Promise<PutResult> {
    const path = this.host.toZk(key);
    const signal = opts.signal;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (opts.ifAbsent || opts.ifVersion === 0) {
        const created = await this.tryCreate(c, key, value, data, owner, signal);
        if (created) return created;
        const cur = await this.read(c, path, signal);
        if (!cur) continue; // deleted meanwhile: create again
        if (cur.data !== null) {
          throw new ConflictError(`key ${JSON.stringify(key)} already exists`, { details: { key, version: cur.stat.version + 1 } });
        }
        // A plain parent znode is not a key: take it over.
        const r = await this.update(c, key, value, data, owner, cur, signal);
        if (r) return r;
        continue;
      }
      if (opts.ifVersion !== undefined) {
        const cur = await this.read(c, path, signal);
        const version = cur && cur.data !== null ? cur.stat.version + 1 : 0;
        if (version !== opts.ifVersion) {
          throw new ConflictError(`key ${JSON.stringify(key)} is at version ${version}, not ${opts.ifVersion}`, { details: { key, version } });
        }
        const r = await this.update(c, key, value, data, owner, cur!, signal);
        if (r) return r;
        throw new ConflictError(`key ${JSON.stringify(key)} changed concurrently (expected version ${opts.ifVersion})`, { details: { key } });
      }
      if (owner !== undefined) {
        // Session-bound: usually a new registration, so create first.
        const created = await this.tryCreate(c, key, value, data, owner, signal);
        if (created) return created;
        const cur = await this.read(c, path, signal);
        if (!cur) continue;
        const r = await this.update(c, key, value, data, owner, cur, signal);
        if (r) return r;
        continue;
      }
      // Persistent: usually an update, so setData first.
      const done = this.host.journal.begin([path]);
      let set: { zxid: number; stat: ZStat };
      try {
        set = await c.setData(path, data, -1, signal);
        this.journalSet(path, value, set.stat);
      } catch (e) {
        if (!isZk(e, ZK.NO_NODE)) throw e;
        const created = await this.tryCreate(c, key, value, data, undefined, signal);
        if (created) return created;
        continue;
      } finally {
        done();
      }
      if (set.stat.ephemeralOwner === undefined) return { revision: set.stat.mzxid, kv: toKv(key, data, set.stat) };
      // It was bound to a session and must not be any more: replace the znode.
      const r = await this.update(c, key, value, data, undefined, { zxid: set.zxid, data, stat: set.stat }, signal);
      if (r) return r;
    }
    throw new UnavailableError(`put ${key}: gave up after ${MAX_ATTEMPTS} attempts under concurrent changes`);
  }

  /** Create the key (and missing parents); undefined when it already exists. */
  private async tryCreate(c: ZkConn, key: string, value: string, data: Buffer, owner: string | undefined, signal?: AbortSignal): Promise<PutResult | undefined> {
    const path = this.host.toZk(key);
    const parent = parentPath(path);
    for (let i = 0; i < MAX_ATTEMPTS; i++) {
      const done = this.host.journal.begin([path, parent]);
      try {
        const z = await c.create(path, data, owner ? MODE.EPHEMERAL : MODE.PERSISTENT, this.host.acl, signal);
        this.host.journal.addChild(parent, { zxid: z, kind: 'create', name: baseName(path), czxid: z, isKey: true });
        this.host.journal.addVersion(path, { czxid: z, version: 0, mzxid: z, value, session: owner });
        return { revision: z, kv: { key, value, createRevision: z, modRevision: z, version: 1, ...(owner ? { session: owner } : {}) } };
      } catch (e) {
        if (isZk(e, ZK.NODE_EXISTS)) return undefined;
        if (!isZk(e, ZK.NO_NODE)) throw e;
      } finally {
        done();
      }
      await this.mkdirs(c, parent, signal);
    }
    throw new UnavailableError(`put ${key}: its parent znodes kept disappearing`);
  }

  /**
   * Create the session-bound key `<prefix><10 digits>` through `c` (the session's connection) with
   * mode EPHEMERAL_SEQUENTIAL, creating missing parents. The last segment of `prefix` is unique to
   * this call (contract): when a create was sent and its reply lost (connection loss, deadline),
   * the parent's children are listed on the same connection (ZooKeeper answers a session's
   * requests in order, so the list follows the create) and a child starting with that segment is
   * ours: it is adopted instead of creating a second one (Curator's protected mode,
   * CreateBuilderImpl.findProtectedNodeInForeground). Otherwise the create is sent again. Gives up
   * with UnavailableError after MAX_ATTEMPTS; a session that ended fails it at once.
   */
  async createSequentialOn(c: ZkConn, prefix: string, value: string, data: Buffer, owner: string, signal?: AbortSignal): Promise<PutResult> {
    const path = this.host.toZk(prefix);
    const parent = parentPath(path);
    const leaf = baseName(path);
    const dirKey = prefix.slice(0, prefix.lastIndexOf('/') + 1);
    const made = (zxid: number, name: string, stat?: ZStat): PutResult => {
      const czxid = stat?.czxid ?? zxid;
      const version = stat?.version ?? 0;
      const kv = { key: dirKey + name, value, createRevision: czxid, modRevision: stat?.mzxid ?? czxid, version: version + 1, session: owner };
      this.host.journal.addChild(parent, { zxid: czxid, kind: 'create', name, czxid, isKey: true });
      this.host.journal.addVersion(`${parent === '/' ? '' : parent}/${name}`, { czxid, version, mzxid: kv.modRevision, value, session: owner });
      return { revision: czxid, kv };
    };
    let unknown: unknown;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (attempt > 0) await sleep(backoff(attempt - 1, 50, 1000), signal);
      try {
        if (unknown !== undefined) {
          const found = await this.findProtected(c, parent, leaf, owner, signal);
          if (found) return made(found.stat.czxid, found.name, found.stat);
        }
        const done = this.host.journal.begin([parent]);
        try {
          const r = await c.createNode(path, data, MODE.EPHEMERAL_SEQUENTIAL, this.host.acl, signal);
          return made(r.zxid, baseName(r.path));
        } finally {
          done();
        }
      } catch (e) {
        if (isZk(e, ZK.NO_NODE)) {
          await this.mkdirs(c, parent, signal);
          continue;
        }
        // Sent, and no answer: it may have been applied. Look for it before creating again.
        if (isRosterError(e, 'UNAVAILABLE')) {
          if (!wasNotSent(e)) unknown = e;
          continue;
        }
        throw e;
      }
    }
    throw new UnavailableError(`create ${prefix}<n>: no answer from ZooKeeper after ${MAX_ATTEMPTS} attempts`, unknown === undefined ? {} : { cause: unknown });
  }

  /** The child of `parent` whose name starts with `leaf`, owned by `owner`, with its stat. */
  private async findProtected(c: ZkConn, parent: string, leaf: string, owner: string, signal?: AbortSignal): Promise<{ name: string; stat: ZStat } | undefined> {
    let children: string[];
    try {
      children = (await c.getChildren(parent, false, signal)).children;
    } catch (e) {
      if (isZk(e, ZK.NO_NODE)) return undefined;
      throw e;
    }
    for (const name of children) {
      if (!name.startsWith(leaf)) continue;
      const r = await this.read(c, `${parent === '/' ? '' : parent}/${name}`, signal);
      if (r && r.stat.ephemeralOwner === owner) return { name, stat: r.stat };
    }
    return undefined;
  }

  /** Create `path` and its missing ancestors as plain (null-data) persistent znodes. */
  async mkdirs(c: ZkConn, path: string, signal?: AbortSignal): Promise<void> {
    if (path === '/' || path === '') return;
    const parent = parentPath(path);
    for (let i = 0; i < MAX_ATTEMPTS; i++) {
      const done = this.host.journal.begin([parent]);
      try {
        const z = await c.create(path, null, MODE.PERSISTENT, this.host.acl, signal);
        this.host.journal.addChild(parent, { zxid: z, kind: 'create', name: baseName(path), czxid: z, isKey: false });
        return;
      } catch (e) {
        if (isZk(e, ZK.NODE_EXISTS)) return;
        if (!isZk(e, ZK.NO_NODE)) throw e;
      } finally {
        done();
      }
      await this.mkdirs(c, parent, signal);
    }
    throw new UnavailableError(`creating ${path}: its parent znodes kept disappearing`);
  }

  /**
   * Write `value` over the node read as `cur`, ending bound to `owner`: setData at the read version
   * when the binding already matches, else replace the znode atomically. undefined if it changed
   * since the read (the caller decides whether that is a conflict or a retry).
   */
  private async update(c: ZkConn, key: string, value: string, data: Buffer, owner: string | undefined, cur: Read, signal?: AbortSignal): Promise<PutResult | undefined> {
    const path = this.host.toZk(key);
    if (cur.stat.ephemeralOwner === owner) {
      const done = this.host.journal.begin([path]);
      try {
        const r = await c.setData(path, data, cur.stat.version, signal);
        this.journalSet(path, value, r.stat);
        return { revision: r.stat.mzxid, kv: toKv(key, data, r.stat) };
      } catch (e) {
        if (isZk(e, ZK.BAD_VERSION) || isZk(e, ZK.NO_NODE)) return undefined;
        throw e;
      } finally {
        done();
      }
    }
    if (owner !== undefined && cur.stat.numChildren > 0) {
      throw new UnsupportedError(`key ${JSON.stringify(key)} has child keys: ZooKeeper cannot bind it to a session (ephemeral znodes cannot have children)`);
    }
    const parent = parentPath(path);
    const done = this.host.journal.begin([path, parent]);
    try {
      const z = await c.multi(
        [
          { type: OP.DELETE, path, version: cur.stat.version },
          { type: OP.CREATE, path, data, mode: owner ? MODE.EPHEMERAL : MODE.PERSISTENT, acl: this.host.acl },
        ],
        signal,
      );
      const name = baseName(path);
      this.host.journal.addChild(parent, {
        zxid: z,
        kind: 'delete',
        name,
        czxid: cur.stat.czxid,
        isKey: cur.data !== null,
        ...(cur.data !== null ? { last: { version: cur.stat.version, mzxid: cur.stat.mzxid, value: cur.data.toString('utf8') } } : {}),
      });
      this.host.journal.addChild(parent, { zxid: z, kind: 'create', name, czxid: z, isKey: true });
      this.host.journal.addVersion(path, { czxid: z, version: 0, mzxid: z, value, session: owner });
      return { revision: z, kv: { key, value, createRevision: z, modRevision: z, version: 1, ...(owner ? { session: owner } : {}) } };
    } catch (e) {
      if (isZk(e, ZK.BAD_VERSION) || isZk(e, ZK.NO_NODE) || isZk(e, ZK.NOT_EMPTY) || isZk(e, ZK.NODE_EXISTS)) return undefined;
      throw e;
    } finally {
      done();
    }
  }

  private journalSet(path: string, value: string | null, stat: ZStat): void {
    this.host.journal.addVersion(path, { czxid: stat.czxid, version: stat.version, mzxid: stat.mzxid, value, session: stat.ephemeralOwner });
  }

  async read(c: ZkConn, path: string, signal?: AbortSignal): Promise<Read | undefined> {
    try {
      return await c.getData(path, false, signal);
    } catch (e) {
      if (isZk(e, ZK.NO_NODE)) return undefined;
      throw e;
    }
  }


  /** Delete `key` through `c` (at version `want` when given): getData then delete at that version,
   *  so a plain parent znode is never "deleted as a key"; a key with child keys keeps its znode and
   *  loses its data (setData null). */
  async removeOn(c: ZkConn, key: string, want: number | undefined, signal?: AbortSignal): Promise<DeleteResult> {
    const path = this.host.toZk(key);
    const parent = parentPath(path);
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let cur: Read | undefined;
      let zxid = 0;
      try {
        cur = await c.getData(path, false, signal);
      } catch (e) {
        if (!isZk(e, ZK.NO_NODE)) throw e;
        zxid = e.zxid;
      }
      const version = cur && cur.data !== null ? cur.stat.version + 1 : 0;
      if (want !== undefined && version !== want) {
        throw new ConflictError(`key ${JSON.stringify(key)} is at version ${version}, not ${want}`, { details: { key, version } });
      }
      if (!cur || cur.data === null) return { revision: cur ? cur.zxid : zxid, deleted: false };
      const done = this.host.journal.begin([path, parent]);
      try {
        const z = await c.remove(path, cur.stat.version, signal);
        this.host.journal.addChild(parent, {
          zxid: z,
          kind: 'delete',
          name: baseName(path),
          czxid: cur.stat.czxid,
          isKey: true,
          last: { version: cur.stat.version, mzxid: cur.stat.mzxid, value: cur.data.toString('utf8') },
        });
        return { revision: z, deleted: true };
      } catch (e) {
        if (isZk(e, ZK.NOT_EMPTY)) {
          // Child keys live under it: keep the znode as a plain parent, drop the value.
          try {
            const r = await c.setData(path, null, cur.stat.version, signal);
            this.journalSet(path, null, r.stat);
            return { revision: r.stat.mzxid, deleted: true };
          } catch (e2) {
            if (!isZk(e2, ZK.BAD_VERSION) && !isZk(e2, ZK.NO_NODE)) throw e2;
          }
        } else if (!isZk(e, ZK.BAD_VERSION) && !isZk(e, ZK.NO_NODE)) {
          throw e;
        }
        if (want !== undefined) throw new ConflictError(`key ${JSON.stringify(key)} changed concurrently (expected version ${want})`, { details: { key } });
      } finally {
        done();
      }
    }
    throw new UnavailableError(`delete ${key}: gave up after ${MAX_ATTEMPTS} attempts under concurrent changes`);
  }
}
