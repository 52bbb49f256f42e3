#!/usr/bin/env bash
# Installs what the fault tests need beyond Go: iproute2 (ip) and iptables,
# from Debian's packages, for test/jepsen-lite's network namespaces. Without
# them (or without root) that test skips and says why.
set -euo pipefail
missing=()
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v iptables >/dev/null 2>&1 || missing+=(iptables)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "install-test-deps: not root; install ${missing[*]} to run test/jepsen-lite" >&2
  exit 0
fi
apt-get update -qq
apt-get install -y -qq "${missing[@]}" >/dev/null
