#!/usr/bin/env bash
# What TLS and authentication cost on the write path. Two 3-node clusters
# on 127.0.0.1 of the same build: "plain" (no TLS, no tokens) and "secure"
# (client TLS, peer mutual TLS on Raft and gRPC, bearer tokens, encrypted
# gossip, from scripts/dev-certs.sh). Rounds of `syncctl bench` at each
# client count take the clusters in turn, so only one is loaded at a time
# and both see the same machine noise; each with server CPU per append
# (utime+stime of that cluster's syncd processes / appends). Medians over
# the rounds and secure/plain ratios.
#   scripts/bench-security.sh [--groups 8] [--clients "1 64"] [--duration 10s] [--rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
groups=8 clients="1 64" duration=10s rounds=3
while [ $# -gt 0 ]; do
  case "$1" in
    --groups) groups=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
work=$(mktemp -d)
pids=()
trap 'stop_all; rm -rf "$work"' EXIT
# shellcheck source=lib/syncd-cluster.sh
source scripts/lib/syncd-cluster.sh
go build -o "$work/syncd" ./cmd/syncd
go build -o "$work/syncctl" ./cmd/syncctl
scripts/dev-certs.sh "$work/certs" n1 n2 n3 >/dev/null
certs=$work/certs

secure_flags() { # NODE
  echo "--tls-cert $certs/$1.pem --tls-key $certs/$1-key.pem --peer-cert $certs/$1.pem --peer-key $certs/$1-key.pem --peer-ca $certs/ca.pem --token-file $certs/tokens.txt --gossip-key $(cat "$certs/gossip.key")"
}
secure_ctl=(--ca "$certs/ca.pem" --token-file "$certs/token-admin")

# cluster NAME PORT SECURE: three nodes on PORT, PORT+10, PORT+20.
cluster() {
  local dir="$work/$1" first=$2 ctl=()
  mkdir -p "$dir"
  [ "$3" = yes ] && ctl=("${secure_ctl[@]}")
  for i in 1 2 3; do
    SYNCD_FLAGS=""
    [ "$3" = yes ] && SYNCD_FLAGS=$(secure_flags "n$i")
    local join=""
    [ "$i" -gt 1 ] && join=127.0.0.1:$first
    start_syncd "$dir/n$i" $((first + (i - 1) * 10)) "$groups" $join
    if [ "$i" = 1 ]; then SYNCCTL_FLAGS="${ctl[*]}" settled 127.0.0.1:"$first" 1; fi
  done
  SYNCCTL_FLAGS="${ctl[*]}" settled "127.0.0.1:$first,127.0.0.1:$((first + 10)),127.0.0.1:$((first + 20))" 3
}

cluster plain 7600 no
plain_pids=("${pids[@]}")
cluster secure 7700 yes
secure_pids=("${pids[@]:3}")
plain_addrs=127.0.0.1:7600,127.0.0.1:7610,127.0.0.1:7620
secure_addrs=127.0.0.1:7700,127.0.0.1:7710,127.0.0.1:7720
app_ctl=(--ca "$certs/ca.pem" --token-file "$certs/token-app")

ticks_of() { local t=0; for p in "$@"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }

echo "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); $groups groups, 3 nodes each, $rounds rounds of $duration per cluster and client count"
results="$work/results"
bench() { # LABEL CLIENTS DURATION
  local out t0 t1
  if [ "$1" = plain ]; then
    t0=$(ticks_of "${plain_pids[@]}")
    out=$("$work/syncctl" --addr "$plain_addrs" --json bench --clients "$2" --size 256 --timelines 1000 --duration "$3")
    t1=$(ticks_of "${plain_pids[@]}")
  else
    t0=$(ticks_of "${secure_pids[@]}")
    out=$("$work/syncctl" "${app_ctl[@]}" --addr "$secure_addrs" --json bench --clients "$2" --size 256 --timelines 1000 --duration "$3")
    t1=$(ticks_of "${secure_pids[@]}")
  fi
  echo "$1 $2 $t0 $t1 $(python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))' <<<"$out")"
}
for c in $clients; do # warm up both
  bench plain "$c" 2s >/dev/null
  bench secure "$c" 2s >/dev/null
done
for round in $(seq "$rounds"); do
  for c in $clients; do
    for which in plain secure; do
      bench "$which" "$c" "$duration" >>"$results"
      echo "round $round: $which, $c clients done" >&2
    done
  done
done
python3 - "$hz" "$results" <<'PY'
import json, statistics, sys
hz, path = int(sys.argv[1]), sys.argv[2]
rows = {}
for line in open(path):
    which, clients, t0, t1, out = line.split(" ", 4)
    r = json.loads(out)
    cpu = (int(t1) - int(t0)) / hz * 1e6 / max(1, r["ok"])
    rows.setdefault((int(clients), which), []).append((r["appends_per_second"], r["p50_ns"] / 1e6, r["p99_ns"] / 1e6, cpu, r["errors"]))
print("| clients | cluster | appends/s | p50 ms | p99 ms | server CPU-µs/append | errors |")
print("|---|---|---|---|---|---|---|")
for clients in sorted({c for c, _ in rows}):
    med = {w: [statistics.median(x[i] for x in rows[(clients, w)]) for i in range(4)] for w in ("plain", "secure")}
    for w in ("plain", "secure"):
        m, errs = med[w], sum(x[4] for x in rows[(clients, w)])
        print(f"| {clients} | {w} | {m[0]:,.0f} | {m[1]:.2f} | {m[2]:.2f} | {m[3]:.0f} | {errs} |")
    p, s = med["plain"], med["secure"]
    print(f"| {clients} | secure/plain | {s[0]/p[0]:.2f}x | {s[1]/p[1]:.2f}x | {s[2]/p[2]:.2f}x | {s[3]/p[3]:.2f}x | |")
PY
