/**
 * The built-in backends' URL schemes, registered with openBackend() (like Go's blank imports of
 * balancers). Each backend's scheme.ts registers itself and loads its implementation only when a
 * URL of its scheme is opened; the declaration below types openBackend's options per scheme (a
 * third-party backend adds its own entries the same way).
 */
import type { MemoryBackendOptions } from './memory/backend.js';
import type { RemoteBackendOptions } from './remote/backend.js';
import type { EtcdBackendOptions } from './etcd/backend.js';
import type { ZooKeeperBackendOptions } from './zookeeper/backend.js';
import type { ConsulBackendOptions } from './consul/backend.js';
import './memory/scheme.js';
import './remote/scheme.js';
import './etcd/scheme.js';
import './zookeeper/scheme.js';
import './consul/scheme.js';

declare module '../contract/schemes.js' {
  interface BackendOptionsByScheme {
    memory: MemoryBackendOptions;
    http: RemoteBackendOptions;
    https: RemoteBackendOptions;
    etcd: EtcdBackendOptions;
    etcds: EtcdBackendOptions;
    zk: ZooKeeperBackendOptions;
    zookeeper: ZooKeeperBackendOptions;
    consul: ConsulBackendOptions;
    consuls: ConsulBackendOptions;
  }
}
