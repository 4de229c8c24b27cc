import { registerBackend } from '../../contract/schemes.js';
import type { RemoteBackendOptions } from './backend.js';

declare module '../../contract/schemes.js' {
  interface BackendOptionsByScheme {
    http: RemoteBackendOptions;
    https: RemoteBackendOptions;
  }
}

registerBackend({
  name: 'roster server',
  schemes: ['http', 'https'],
  example: 'http://host:port',
  open: async (url, options) => (await import('./backend.js')).RemoteBackend.open(url, options as RemoteBackendOptions),
});
