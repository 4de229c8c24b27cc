import { registerBackend } from '../../contract/schemes.js';
import type { ConsulBackendOptions } from './backend.js';

/** consul(s):// — the Consul client (HTTP over undici) loads when a URL of the scheme is first opened. */
registerBackend({ name: 'consul', schemes: ['consul', 'consuls'], example: 'consul://host:8500/prefix', open: async (url, o) => (await import('./backend.js')).ConsulBackend.open(url, o as ConsulBackendOptions) });
