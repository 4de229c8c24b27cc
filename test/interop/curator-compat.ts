/**
 * A reference implementation, in test code only, of the node naming and ordering roster's Lock and
 * Election must use on ZooKeeper to share a path with Curator's InterProcessMutex and LeaderLatch
 * (the rule is written out in docs/interop.md; the real change belongs in src/recipes and the
 * ZooKeeper backend). It talks to ZooKeeper through the raw node-zookeeper-client so
 * curator-recipes.test.ts can show the rule itself gives zero overlaps beside real Curator, before
 * roster's recipes adopt it.
 *
 * The rule, from Curator 5.4's LockInternals / StandardLockInternalsDriver / LeaderLatch:
 * - a participant creates ONE node `<dir>/_c_<uuid>-<name>` with mode EPHEMERAL_SEQUENTIAL, where
 *   <name> is "lock-" (InterProcessMutex, and LeaderSelector's mutex) or "latch-" (LeaderLatch);
 *   ZooKeeper appends a 10-digit sequence. `_c_<uuid>-` is Curator's "protection" prefix: after a
 *   connection loss during the create, the participant finds its node by the uuid instead of
 *   creating a second one.
 * - the order is every child of <dir> sorted by `fixForSorting(child, name)`: the text after the
 *   LAST occurrence of <name>, or the whole child name when it has none; Java String.compareTo on
 *   ASCII = JavaScript '<'.
 * - the holder (leader) is the first in that order; a waiter watches its predecessor.
 */
import { randomUUID } from 'node:crypto';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const zookeeper = require('node-zookeeper-client') as any;

/** Curator's StandardLockInternalsDriver.standardFixForSorting. */
export function fixForSorting(child: string, name: string): string {
  const i = child.lastIndexOf(name);
  return i >= 0 ? child.slice(i + name.length) : child;
}

export function curatorOrder(children: readonly string[], name: string): string[] {
  return [...children].sort((a, b) => {
    const x = fixForSorting(a, name);
    const y = fixForSorting(b, name);
    return x < y ? -1 : x > y ? 1 : 0;
  });
}

type Cb<T> = (err: unknown, v?: T) => void;
const call = <T>(fn: (cb: Cb<T>) => void) => new Promise<T>((resolve, reject) => fn((e, v) => (e ? reject(e as Error) : resolve(v as T))));

export class CuratorCompatClient {
  private constructor(private readonly client: any) {}

  static async connect(connectString: string): Promise<CuratorCompatClient> {
    const client = zookeeper.createClient(connectString, { sessionTimeout: 10_000, spinDelay: 100 });
    await new Promise<void>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no ZooKeeper connection to ${connectString} within 10 s`)), 10_000);
      client.once('connected', () => {
        clearTimeout(t);
        resolve();
      });
      client.connect();
    });
    return new CuratorCompatClient(client);
  }

  /**
   * Enter `dir` as `name` ("lock-" or "latch-") and resolve once first in Curator's order.
   * Returns the release function (deletes our node).
   */
  async acquire(dir: string, name: 'lock-' | 'latch-', data = ''): Promise<() => Promise<void>> {
    await call<void>((cb) => this.client.mkdirp(dir, cb));
    const created = await call<string>((cb) => this.client.create(`${dir}/_c_${randomUUID()}-${name}`, Buffer.from(data), zookeeper.ACL.OPEN_ACL_UNSAFE, zookeeper.CreateMode.EPHEMERAL_SEQUENTIAL, cb));
    const ours = created.slice(dir.length + 1);
    for (;;) {
      const children = await call<string[]>((cb) => this.client.getChildren(dir, cb));
      const order = curatorOrder(children, name);
      const i = order.indexOf(ours);
      if (i < 0) throw new Error(`our node ${created} is gone (session expired?)`);
      if (i === 0) break;
      // Wait for the predecessor to go (exists() with a one-shot watch; null = already gone).
      await new Promise<void>((resolve, reject) => {
        this.client.exists(
          `${dir}/${order[i - 1]}`,
          () => resolve(),
          (err: unknown, stat: unknown) => (err ? reject(err as Error) : stat ? undefined : resolve()),
        );
      });
    }
    return () => call<void>((cb) => this.client.remove(created, -1, cb));
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      this.client.once('disconnected', () => resolve());
      this.client.close();
      setTimeout(resolve, 2000).unref();
    });
  }
}
