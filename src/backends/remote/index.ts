/**
 * `roster-sd/remote`: the client of roster's own server (`http://host:port`). Importing it
 * registers the `http://` and `https://` schemes with openBackend().
 */
import './scheme.js';

export { RemoteBackend, type RemoteBackendOptions, type RemoteTls } from './backend.js';
