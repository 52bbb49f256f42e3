#!/usr/bin/env bash
# Collections against appends, in one run on one 3-node cluster (127.0.0.1):
# 64 clients of appends, then 64 clients of collection writes (one put each),
# each with server CPU per operation (utime+stime of the syncd processes);
# then `syncctl bench records`: a Sync of a few changes in a big collection
# against a full read, and SyncMany of a reconnecting device's collections
# against one Sync each (median latency, gRPC bytes).
#   scripts/bench-records.sh [--groups 8] [--clients 64] [--duration 10s] [--records 100000] [--changes 10] [--collections 200]
set -euo pipefail
cd "$(dirname "$0")/.."
groups=8 clients=64 duration=10s records=100000 changes=10 collections=200
while [ $# -gt 0 ]; do
  case "$1" in
    --groups) groups=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --records) records=$2; shift 2 ;;
    --changes) changes=$2; shift 2 ;;
    --collections) collections=$2; shift 2 ;;
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
start_three "$groups"

echo "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); $groups groups, 3 nodes"
echo "| operation | clients | ops/s | p50 ms | p99 ms | server CPU-µs/op |"
echo "|---|---|---|---|---|---|"
for op in append record-write; do
  "$work/syncctl" --addr "$addrs" --json bench --op "$op" --clients "$clients" --size 256 --timelines 1000 --duration 2s >/dev/null # warm up
  t0=$(cpu_ticks)
  out=$("$work/syncctl" --addr "$addrs" --json bench --op "$op" --clients "$clients" --size 256 --timelines 1000 --duration "$duration")
  t1=$(cpu_ticks)
  python3 - "$op" "$clients" "$t0" "$t1" "$hz" "$out" <<'PY'
import json, sys
op, c, t0, t1, hz, out = sys.argv[1:]
r = json.loads(out)
cpu = (int(t1) - int(t0)) / int(hz) * 1e6 / max(1, r["ok"])
print(f"| {op} | {c} | {r['appends_per_second']:,.0f} | {r['p50_ns']/1e6:.2f} | {r['p99_ns']/1e6:.2f} | {cpu:.0f} |")
PY
done
echo
"$work/syncctl" --addr 127.0.0.1:7500 --timeout 20m bench records --records "$records" --changes "$changes" --collections "$collections"
