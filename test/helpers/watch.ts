/** The stream helpers roster-sd/testing publishes, used by the repo's own tests from source. */
export { Reader, readSnapshot, eventually, uniquePrefix } from '../../src/testing/watch.js';
