import { registerBackend } from '../../contract/schemes.js';
import type { EtcdBackendOptions } from './backend.js';

declare module '../../contract/schemes.js' {
  interface BackendOptionsByScheme {
    etcd: EtcdBackendOptions;
    etcds: EtcdBackendOptions;
  }
}

registerBackend({
  name: 'etcd',
  schemes: ['etcd', 'etcds'],
  example: 'etcd://host:port/prefix',
  open: async (url, options) => (await import('./backend.js')).EtcdBackend.open(url, options as EtcdBackendOptions),
});
