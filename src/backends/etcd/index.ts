/**
 * `roster-sd/etcd`: the etcd v3 backend (`etcd://h1:2379[,h2:2379]/prefix`, `etcds://` for TLS).
 * Importing it registers both schemes with openBackend(). The mapping of the contract onto etcd is
 * described in backend.ts.
 */
import './scheme.js';

export { EtcdBackend, type EtcdBackendOptions } from './backend.js';
export { parseEtcdUrl, type EtcdUrl } from './url.js';
