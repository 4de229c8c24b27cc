import { registerBackend } from '../../contract/schemes.js';
import type { MemoryBackendOptions } from './backend.js';

declare module '../../contract/schemes.js' {
  interface BackendOptionsByScheme {
    memory: MemoryBackendOptions;
  }
}

registerBackend({
  name: 'memory',
  schemes: ['memory'],
  example: 'memory:// or memory://<name>',
  open: async (url, options) => (await import('./backend.js')).MemoryBackend.open(url, options as MemoryBackendOptions),
});
