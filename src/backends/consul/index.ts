/**
 * `roster-sd/consul`: the Consul backend (`consul://h1:8500[,h2:8500]/prefix`, `consuls://` for
 * HTTPS). Importing it registers both schemes with openBackend(). The mapping of the contract onto
 * Consul is described in backend.ts and docs/consul.md.
 */
import './scheme.js';

export { ConsulBackend, type ConsulBackendOptions } from './backend.js';
export { ConsulCatalog } from './catalog.js';
export { consulLock, LOCK_FLAG_VALUE, type ConsulLock, type ConsulLockOptions } from './lock.js';
export { parseConsulUrl, type ConsulUrl } from './url.js';
