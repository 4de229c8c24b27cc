import { registerBackend } from '../../contract/schemes.js';
import type { MemoryBackendOptions } from './backend.js';

/** memory:// — the implementation loads when a URL of the scheme is first opened. */
registerBackend({ name: 'memory', schemes: ['memory'], example: 'memory:// or memory://<name>', open: async (url, o) => (await import('./backend.js')).MemoryBackend.open(url, o as MemoryBackendOptions) });
