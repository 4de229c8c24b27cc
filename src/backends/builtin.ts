/**
 * The built-in backends' URL schemes, registered with openBackend() (like Go's blank imports of
 * balancers). Each scheme module registers itself and loads its implementation only when a URL of
 * its scheme is opened.
 */
import './memory/scheme.js';
import './remote/scheme.js';
import './etcd/scheme.js';
import './zookeeper/scheme.js';
