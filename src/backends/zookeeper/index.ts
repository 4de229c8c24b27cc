/**
 * `roster-sd/zookeeper`: the ZooKeeper backend (`zk://h1:2181[,h2:2181]/chroot`, also
 * `zookeeper://`). Importing it registers both schemes with openBackend(). The mapping of the
 * contract onto ZooKeeper is described in backend.ts.
 */
import './scheme.js';

export { ZooKeeperBackend, type ZooKeeperBackendOptions } from './backend.js';
export { parseZkUrl, type ZkUrl } from './url.js';
