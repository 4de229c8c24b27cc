/** Failure scenarios on a 3-member etcd cluster (see scenarios.ts and scenario-suite.ts). */
import { scenarioSuite } from './scenario-suite.js';

scenarioSuite('etcd');
