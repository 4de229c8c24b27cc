import { registerBackend } from '../../contract/schemes.js';
import type { ZooKeeperBackendOptions } from './backend.js';

declare module '../../contract/schemes.js' {
  interface BackendOptionsByScheme {
    zk: ZooKeeperBackendOptions;
    zookeeper: ZooKeeperBackendOptions;
  }
}

registerBackend({
  name: 'ZooKeeper',
  schemes: ['zk', 'zookeeper'],
  example: 'zk://host:port/chroot',
  open: async (url, options) => (await import('./backend.js')).ZooKeeperBackend.open(url, options as ZooKeeperBackendOptions),
});
