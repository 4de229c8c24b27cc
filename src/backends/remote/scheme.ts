import { registerBackend } from '../../contract/schemes.js';
import type { RemoteBackendOptions } from './backend.js';

/** http(s):// — roster's server; the client loads when a URL of the scheme is first opened. */
registerBackend({ name: 'roster server', schemes: ['http', 'https'], example: 'http://host:port', open: async (url, o) => (await import('./backend.js')).RemoteBackend.open(url, o as RemoteBackendOptions) });
