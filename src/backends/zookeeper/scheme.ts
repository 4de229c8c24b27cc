import { registerBackend } from '../../contract/schemes.js';
import type { ZooKeeperBackendOptions } from './backend.js';

/** zk:// and zookeeper:// — the ZooKeeper client loads when a URL of the scheme is first opened. */
registerBackend({ name: 'ZooKeeper', schemes: ['zk', 'zookeeper'], example: 'zk://host:port/chroot', open: async (url, o) => (await import('./backend.js')).ZooKeeperBackend.open(url, o as ZooKeeperBackendOptions) });
