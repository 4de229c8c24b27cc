#!/usr/bin/env bash
# Install the Python Consul clients the /v1 tests run (test/consul/python.test.ts):
# - python3-consul2 from Debian, installed normally;
# - python3-consul from Debian, which conflicts with python3-consul2 as a package: downloaded with
#   apt-get download and unpacked with dpkg-deb -x into .cache/consul-clients/python3-consul, used
#   through PYTHONPATH.
# Idempotent; called by .ci/run. Needs root for apt-get install (CI runs as root).
set -euo pipefail
cd "$(dirname "$0")/../.."
dest=.cache/consul-clients
need=()
dpkg -s python3-consul2 >/dev/null 2>&1 || need+=(python3-consul2)
python3 -c 'import requests, six' >/dev/null 2>&1 || need+=(python3-requests python3-six)
if [ ${#need[@]} -gt 0 ]; then
  echo "installing: ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -f "$dest/python3-consul/usr/lib/python3/dist-packages/consul/base.py" ]; then
  mkdir -p "$dest/download"
  fetch() { (cd "$dest/download" && rm -f python3-consul_*.deb && apt-get download python3-consul 2>&1 | grep -v '^W: Download is performed unsandboxed' || true); }
  fetch
  deb=$(ls "$dest"/download/python3-consul_*.deb 2>/dev/null | head -1)
  if [ -z "$deb" ]; then
    # No package lists yet on a fresh machine: update once and try again.
    apt-get update -qq
    fetch
    deb=$(ls "$dest"/download/python3-consul_*.deb 2>/dev/null | head -1)
  fi
  if [ -z "$deb" ]; then
    echo "apt-get download python3-consul failed (run apt-get update first?)" >&2
    exit 1
  fi
  rm -rf "$dest/python3-consul"
  dpkg-deb -x "$deb" "$dest/python3-consul"
fi
echo "python3-consul2: $(dpkg-query -W -f='${Version}' python3-consul2); python3-consul: $(basename "$(ls "$dest"/download/python3-consul_*.deb)")"
