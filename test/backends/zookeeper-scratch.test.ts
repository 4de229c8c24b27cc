import { it } from 'vitest';
import { startZooKeeper } from '../helpers/zookeeper.js';

it('zkcli', async () => {
  const zk = await startZooKeeper();
  const cli = zk.interactiveCli();
  await cli.connected();
  console.log('A', JSON.stringify(await cli.send(`create /a ""`, /Created|Node already exists/)));
  console.log('B', JSON.stringify(await cli.send(`create -e /a/b '{"x": "y z", "n": 1}'`, /Created|exists/)));
  console.log('C', JSON.stringify(await cli.send(`get /a/b`, /\}\n/)));
  console.log('D', JSON.stringify(await cli.send(`stat /a/b`, /numChildren = \d+/)));
  console.log('D2', JSON.stringify(await cli.send(`get /a`, /\n.*\[zk/)));
  const t0 = Date.now();
  const r = await zk.cli(['get', '/a/b']);
  console.log('E', Date.now() - t0, JSON.stringify(r));
  await cli.quit();
  await zk.stop();
}, 60000);
