/**
 * `roster-sd/testing`: what users' own tests need to test code built on roster, and what a backend
 * author needs to hold a new backend to the contract.
 *
 * - `conformance(api, target)`: the backend conformance suite roster's backends pass.
 * - `memoryFixture()`, `startTestServer()`: real stores for tests (memory://, an in-process server).
 * - `FakeClock`: inject it as `clock` to test time-dependent logic without waiting.
 * - `Reader`, `readSnapshot`, `eventually`, `uniquePrefix`: bounded waits on streams and state.
 * - `EtcdCluster`, `ZooKeeperEnsemble`, `TcpProxy`: real 3-member clusters with fault injection.
 *
 * Importing it imports no test runner: the suite takes the runner's functions as a parameter.
 */
export { conformance, type ConformanceTarget, type TestApi, type Matchers } from './conformance.js';
export { memoryFixture, startTestServer, type MemoryFixture, type TestServer, type TestServerOptions } from './fixtures.js';
export { FakeClock } from './clock.js';
export { Reader, readSnapshot, eventually, uniquePrefix } from './watch.js';
// Clusters: a 3-member etcd cluster and a 3-node ZooKeeper ensemble on loopback, each member behind
// a fault proxy (cut / blackhole / pause / delay), members killed, restarted, stopped, paused.
export * from './cluster/index.js';
