/** Failure scenarios on a 3-node ZooKeeper ensemble (see scenarios.ts and scenario-suite.ts). */
import { scenarioSuite } from './scenario-suite.js';

scenarioSuite('zookeeper');
