/**
 * `roster-sd/memory`: the in-process backend (`memory://`, `memory://<name>`), for tests and
 * single-process use. Importing it registers the `memory://` scheme with openBackend().
 */
import './scheme.js';

export { MemoryBackend, type MemoryBackendOptions } from './backend.js';
