import { registerBackend } from '../../contract/schemes.js';
import type { EtcdBackendOptions } from './backend.js';

/** etcd(s):// — etcd's client (etcd3, gRPC) loads when a URL of the scheme is first opened. */
registerBackend({ name: 'etcd', schemes: ['etcd', 'etcds'], example: 'etcd://host:port/prefix', open: async (url, o) => (await import('./backend.js')).EtcdBackend.open(url, o as EtcdBackendOptions) });
