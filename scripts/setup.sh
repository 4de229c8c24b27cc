#!/usr/bin/env bash
# The one setup step for the tests (run by `npm test`'s pretest and by .ci/run): the system
# packages the test suite uses, from Debian. When something is missing it installs it if it can
# (root and apt-get), and otherwise stops at once with one line naming the missing packages and
# the command that installs them. Idempotent; takes well under a second when everything is there.
#
#   etcd-server etcd-client     real etcd and etcdctl (backends, interop)
#   zookeeper                   real ZooKeeper (backends, interop; zkCli)
#   default-jdk-headless        Java for ZooKeeper and the Curator interop programs (javac)
#   libcurator-*-java           Apache Curator (interop with Java services)
#   golang-go golang-etcd-server-dev   Go, grpc-go and etcd's Go client (interop with Go services)
#   chromium                    the dashboard tests (headless, through playwright-core)
#   dnsutils                    dig, against roster server --dns
#   openssl                     test certificates (TLS of roster server, the remote backend, etcd)
#   prometheus                  a real Prometheus scraping roster's HTTP service discovery
#   python3-consul2 python3-requests python3-six, and python3-consul unpacked (it conflicts with
#                               python3-consul2 as a package) into .cache/consul-clients
#   zsh fish                    the shell completion scripts, loaded into the real shells
#
# ROSTER_SKIP_SETUP=1 skips it (e.g. on a machine that runs only part of the suite).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "${ROSTER_SKIP_SETUP:-}" = "1" ] && exit 0

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have etcd && have etcdctl || need+=(etcd-server etcd-client)
[ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
have java && have javac || need+=(default-jdk-headless)
[ -f /usr/share/java/curator-x-discovery.jar ] || need+=(libcurator-discovery-java)
[ -f /usr/share/java/curator-recipes.jar ] || need+=(libcurator-recipes-java)
have go || need+=(golang-go)
[ -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3/naming/resolver ] || need+=(golang-etcd-server-dev)
have chromium || need+=(chromium)
have dig || need+=(dnsutils)
have openssl || need+=(openssl)
have prometheus || need+=(prometheus)
dpkg -s python3-consul2 >/dev/null 2>&1 || need+=(python3-consul2)
python3 -c 'import requests, six' >/dev/null 2>&1 || need+=(python3-requests python3-six)
have zsh || need+=(zsh)
have fish || need+=(fish)

apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  # On a fresh machine the package lists may be missing: update once and try again.
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null 2>&1 || {
    apt-get update -qq >/dev/null
    apt-get install -y -qq --no-install-recommends "$@" >/dev/null
  }
}

if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = "0" ] && have apt-get; then
    echo "roster setup: installing ${need[*]}"
    apt_install "${need[@]}"
  else
    echo "roster setup: missing system packages: ${need[*]}; install them with: sudo apt-get install -y --no-install-recommends ${need[*]} (or set ROSTER_SKIP_SETUP=1 to skip this check)" >&2
    exit 1
  fi
fi

# python3-consul beside python3-consul2: the .deb unpacked into its own folder, used through PYTHONPATH
# (test/consul/python.test.ts).
dest=.cache/consul-clients
if [ ! -f "$dest/python3-consul/usr/lib/python3/dist-packages/consul/base.py" ]; then
  mkdir -p "$dest/download"
  fetch() { (cd "$dest/download" && rm -f python3-consul_*.deb && apt-get download python3-consul >/dev/null 2>&1) || true; }
  fetch
  deb=$(ls "$dest"/download/python3-consul_*.deb 2>/dev/null | head -1 || true)
  if [ -z "$deb" ] && [ "$(id -u)" = "0" ]; then
    apt-get update -qq >/dev/null
    fetch
    deb=$(ls "$dest"/download/python3-consul_*.deb 2>/dev/null | head -1 || true)
  fi
  if [ -z "$deb" ]; then
    echo "roster setup: cannot download python3-consul (apt-get download python3-consul failed); run: sudo apt-get update, then npm test again" >&2
    exit 1
  fi
  rm -rf "$dest/python3-consul"
  dpkg-deb -x "$deb" "$dest/python3-consul"
fi
