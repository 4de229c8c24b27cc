import type { Backend } from './types.js';
import { InvalidArgumentError } from '../core/errors.js';

export interface OpenOptions {
  /** Passed through to the backend (e.g. etcd auth/TLS, ZooKeeper digest auth). */
  [k: string]: unknown;
}

/**
 * Open a backend by URL. Engines load lazily so an application that uses only etcd never loads
 * the ZooKeeper client and the other way round.
 *   memory://[name]                     in-process (same name → same store within this process)
 *   http://host:port                    roster server
 *   etcd://h1:2379[,h2:2379]/prefix     etcd v3
 *   zk://h1:2181[,h2:2181]/chroot       ZooKeeper
 *   consul://host:8500                  Consul agent
 */
export async function openBackend(url: string, options: OpenOptions = {}): Promise<Backend> {
  const m = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url);
  const scheme = m?.[1]?.toLowerCase();
  switch (scheme) {
    case 'memory': {
      const { MemoryBackend } = await import('../backends/memory.js');
      return MemoryBackend.open(url);
    }
    case 'http':
    case 'https': {
      const { RemoteBackend } = await import('../backends/remote/index.js');
      return RemoteBackend.open(url, options);
    }
    case 'etcd':
    case 'etcds': {
      const mod = await import('../backends/etcd/index.js');
      return mod.EtcdBackend.open(url, options);
    }
    case 'zk':
    case 'zookeeper': {
      const mod = await import('../backends/zookeeper/index.js');
      return mod.ZooKeeperBackend.open(url, options);
    }
    default:
      throw new InvalidArgumentError(
        `unsupported backend URL ${JSON.stringify(url)}: expected memory://, http://host:port, etcd://host:port/prefix or zk://host:port/chroot`,
      );
  }
}
