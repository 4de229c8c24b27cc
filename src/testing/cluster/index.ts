/**
 * Cluster fixtures for tests, published in `roster-sd/testing`: a 3-member etcd cluster and a 3-node
 * ZooKeeper ensemble on loopback, each member behind a TCP proxy a test can cut, delay or
 * blackhole, and members a test can kill, restart, stop, pause and resume. Free of any test
 * framework; every server is killed when the process exits.
 */
export { TcpProxy, type ProxyMode, type TcpProxyOptions } from './proxy.js';
export { ServerGroup, ServerProcess } from './member.js';
export {
  EtcdCluster,
  EtcdMember,
  ETCD_BIN,
  ETCDCTL_BIN,
  type EtcdClusterOptions,
  type EtcdMemberConfig,
  type EtcdMemberStatus,
  type EtcdTlsFiles,
} from './etcd-cluster.js';
export {
  ZooKeeperEnsemble,
  ZooKeeperMember,
  ZK_JAR,
  TEST_JVM_ARGS,
  zookeeperAvailable,
  type ZooKeeperEnsembleOptions,
  type ZooKeeperMemberConfig,
  type ZooKeeperMode,
} from './zookeeper-ensemble.js';
export { freePort, fourLetter, waitFor, track } from './processes.js';
