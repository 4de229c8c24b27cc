/**
 * Coordination recipes, written once over the backend contract (src/contract/types.ts) so they run on
 * every backend. Modelled on etcd's client/v3/concurrency: each recipe takes a backend and a Session
 * (the liveness root of its keys); a waiter that is aborted or whose session is lost removes its key.
 */
export { lock, tryLock, FencedResource, type Lock, type LockOptions } from './lock.js';
export { Election, NotLeaderError, observeLeaders, type Leader, type ElectionOptions } from './election.js';
export { Queue, type QueueItem, type PutItemResult } from './queue.js';
export { Barrier, type Arrival } from './barrier.js';
export { Semaphore, type Permit } from './semaphore.js';
export { watchConfig, jsonConfig, type ConfigWatch, type ConfigChange, type ConfigOptions } from './config.js';
