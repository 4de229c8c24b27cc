"""Drive roster server's /v1 API with a Python Consul client (python3-consul2 or python3-consul).

Run by test/consul/python.test.ts as
    PYTHONPATH=<unpacked client> python3 client.py <port> <expected module dir prefix>
Prints one JSON line {"ok": true, "module": ...} or fails with a traceback. Every assertion here
could fail against a server that gets Consul's shapes or semantics wrong.
"""
import base64
import json
import sys
import threading
import time

import consul

port = int(sys.argv[1])
expected = sys.argv[2]
assert consul.__file__.startswith(expected), "wrong client imported: %s (expected under %s)" % (consul.__file__, expected)

c = consul.Consul(host='127.0.0.1', port=port)

# agent/self: the datacenter, as Prometheus and friends read it
self_ = c.agent.self()
assert self_['Config']['Datacenter'] == 'dc1', self_

# Register with a TTL check: critical until passed (Consul's rule), then passing.
c.agent.service.register('pyorders', service_id='pyorders-1', address='10.2.0.1', port=8081,
                         tags=['py', 'v1'], check=consul.Check.ttl('20s'))
idx, nodes = c.health.service('pyorders', passing=True)
assert nodes == [], nodes
assert int(idx) >= 1
c.agent.check.ttl_pass('service:pyorders-1', 'fine')
idx, nodes = c.health.service('pyorders', passing=True)
assert [n['Service']['ID'] for n in nodes] == ['pyorders-1'], nodes
svc = nodes[0]['Service']
assert (svc['Address'], svc['Port'], svc['Tags']) == ('10.2.0.1', 8081, ['py', 'v1']), svc
checks = {ch['CheckID']: ch['Status'] for ch in nodes[0]['Checks']}
assert checks == {'serfHealth': 'passing', 'service:pyorders-1': 'passing'}, checks
assert 'pyorders-1' in c.agent.services()
assert c.agent.checks()['service:pyorders-1']['Status'] == 'passing'

# A blocking query parks until a change to this service, and wakes on it.
result = {}


def blocked():
    t0 = time.time()
    result['idx'], result['nodes'] = c.health.service('pyorders', index=idx, wait='10s')
    result['elapsed'] = time.time() - t0


th = threading.Thread(target=blocked)
th.start()
time.sleep(0.2)  # let the request park; the assertion below holds either way
c.agent.service.register('pyorders', service_id='pyorders-2', address='10.2.0.2', port=8082,
                         check=consul.Check.ttl('20s'))
th.join(15)
assert not th.is_alive(), 'blocking query did not return'
assert int(result['idx']) > int(idx), result
assert sorted(n['Service']['ID'] for n in result['nodes']) == ['pyorders-1', 'pyorders-2'], result
assert result['elapsed'] < 5, result

# catalog
idx, services = c.catalog.services()
assert services.get('pyorders') == ['py', 'v1'], services
idx, nodes = c.catalog.nodes()
assert len(nodes) == 1 and nodes[0]['Node'] == 'roster-test', nodes
idx, entries = c.catalog.service('pyorders')
assert sorted(e['ServiceID'] for e in entries) == ['pyorders-1', 'pyorders-2'], entries
idx, node = c.catalog.node('roster-test')
assert 'pyorders-1' in node['Services'], node

# health checks and states
idx, hc = c.health.checks('pyorders')
assert sorted(h['CheckID'] for h in hc) == ['service:pyorders-1', 'service:pyorders-2'], hc
idx, crit = c.health.state('critical')
assert [h['CheckID'] for h in crit] == ['service:pyorders-2'], crit

# Node-level check (no service): registered, failed, deregistered.
c.agent.check.register('disk', check=consul.Check.ttl('30s'))
c.agent.check.ttl_fail('disk', 'full')
assert c.agent.checks()['disk']['Status'] == 'critical'
idx, nodes = c.health.service('pyorders', passing=True)
assert nodes == [], 'a critical node check fails every service on the node, as in Consul'
c.agent.check.deregister('disk')
assert 'disk' not in c.agent.checks()

# Maintenance = roster's draining: a critical maintenance check.
c.agent.service.maintenance('pyorders-1', 'true', 'upgrade')
idx, nodes = c.health.service('pyorders')
m = [ch for n in nodes for ch in n['Checks'] if ch['CheckID'] == '_service_maintenance:pyorders-1']
assert m and m[0]['Status'] == 'critical' and m[0]['Notes'] == 'upgrade', nodes
c.agent.service.maintenance('pyorders-1', 'false')

# KV
assert c.kv.put('py/a', 'alpha') is True
assert c.kv.put('py/b', b'\x00\x01binary', flags=18446744073709551615) is True
idx, item = c.kv.get('py/a')
assert item['Value'] == b'alpha', item
idx, item = c.kv.get('py/b')
assert item['Value'] == b'\x00\x01binary' and item['Flags'] == 18446744073709551615, item
idx, items = c.kv.get('py/', recurse=True)
assert [i['Key'] for i in items] == ['py/a', 'py/b'], items
idx, keys = c.kv.get('py/', keys=True)
assert keys == ['py/a', 'py/b'], keys
idx, missing = c.kv.get('py/none')
assert missing is None
assert c.kv.put('py/a', 'x', cas=1) is False
assert c.kv.delete('py/', recurse=True) is True
idx, items = c.kv.get('py/', recurse=True)
assert items is None

# Sessions and a lock
sid = c.session.create(name='pylock', ttl=10, behavior='delete', lock_delay=0)
idx, info = c.session.info(sid)
assert info['ID'] == sid and info['Behavior'] == 'delete' and info['TTL'] == '10s', info
assert c.session.renew(sid)['ID'] == sid
assert c.kv.put('py/lock', 'me', acquire=sid) is True
other = c.session.create(ttl=10)
assert c.kv.put('py/lock', 'you', acquire=other) is False
idx, held = c.kv.get('py/lock')
assert held['Session'] == sid, held
assert c.session.destroy(sid) is True
idx, gone = c.kv.get('py/lock')
assert gone is None, 'Behavior=delete removes the held key with the session'
try:
    renewed = c.session.renew(sid)
except consul.NotFound:  # python3-consul2 raises on the 404
    renewed = None
assert renewed is None, 'renewing a destroyed session is a 404'
c.session.destroy(other)

# Deregistration
assert c.agent.service.deregister('pyorders-1') is True
assert c.agent.service.deregister('pyorders-2') is True
idx, nodes = c.health.service('pyorders')
assert nodes == [], nodes
assert c.status.leader().endswith(':8300')

print(json.dumps({"ok": True, "module": consul.__file__}))
