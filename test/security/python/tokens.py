"""A Python Consul client with roster tokens: argv = port, PYTHONPATH dir, admin token, reader token.
Prints one JSON line of what happened (the test asserts on it)."""
import json
import sys

sys.path.insert(0, sys.argv[2])
import consul  # noqa: E402

port, admin, reader = int(sys.argv[1]), sys.argv[3], sys.argv[4]
out = {"module": consul.__file__}

c = consul.Consul(host="127.0.0.1", port=port, token=admin)
c.agent.service.register("pyapp", service_id="pyapp-1", address="10.0.0.7", port=8080)
out["registered"] = [s["ServiceID"] for s in c.catalog.service("pyapp")[1]]
c.kv.put("py/a", "1")
out["kv"] = c.kv.get("py/a")[1]["Value"].decode()

r = consul.Consul(host="127.0.0.1", port=port, token=reader)
out["reader_reads"] = r.kv.get("py/a")[1]["Value"].decode()
try:
    r.kv.put("py/a", "2")
    out["reader_write"] = "allowed"
except consul.ACLPermissionDenied:
    out["reader_write"] = "denied"

n = consul.Consul(host="127.0.0.1", port=port)
try:
    n.kv.get("py/a")
    out["anonymous"] = "allowed"
except consul.ConsulException as e:
    out["anonymous"] = type(e).__name__ + ":" + str(e)[:300]

out["after"] = c.kv.get("py/a")[1]["Value"].decode()
print(json.dumps(out))
