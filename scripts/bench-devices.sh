#!/usr/bin/env bash
# Device operations beside appends, in one run on one 3-node cluster
# (127.0.0.1): rounds of 64 clients of appends, logins (a new session of a
# user's device each) and acks (a device's cursor), taken in turn, each
# with server CPU per operation (utime+stime of the syncd processes); the
# medians over the rounds. Then `syncctl bench device-reconnect`: what a
# device with 50 conversations, 10 of them with new messages, pays to get
# its conversation list and the new messages.
#   scripts/bench-devices.sh [--groups 8] [--clients 64] [--duration 10s] [--rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
groups=8 clients=64 duration=10s rounds=3
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
start_three "$groups"

echo "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); $groups groups, 3 nodes, $rounds rounds of $duration"
results="$work/results"
for op in append login ack; do # warm up (ack also sets up its sessions)
  "$work/syncctl" --addr "$addrs" --json bench --op "$op" --clients "$clients" --size 256 --timelines 1000 --duration 2s >/dev/null
done
for round in $(seq "$rounds"); do
  for op in append login ack; do
    t0=$(cpu_ticks)
    out=$("$work/syncctl" --addr "$addrs" --json bench --op "$op" --clients "$clients" --size 256 --timelines 1000 --duration "$duration")
    t1=$(cpu_ticks)
    echo "$op $round $t0 $t1 $(python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))' <<<"$out")" >>"$results"
  done
done
python3 - "$clients" "$hz" "$results" <<'PY'
import json, statistics, sys
clients, hz, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = {}
for line in open(path):
    op, _, t0, t1, out = line.split(" ", 4)
    r = json.loads(out)
    cpu = (int(t1) - int(t0)) / hz * 1e6 / max(1, r["ok"])
    rows.setdefault(op, []).append((r["appends_per_second"], r["p50_ns"] / 1e6, r["p99_ns"] / 1e6, cpu, r["errors"]))
print("| operation | clients | ops/s | p50 ms | p99 ms | server CPU-µs/op | errors |")
print("|---|---|---|---|---|---|---|")
base = statistics.median(x[0] for x in rows["append"])
for op, xs in rows.items():
    m = [statistics.median(x[i] for x in xs) for i in range(4)]
    print(f"| {op} | {clients} | {m[0]:,.0f} ({m[0]/base:.2f}x appends) | {m[1]:.2f} | {m[2]:.2f} | {m[3]:.0f} | {sum(x[4] for x in xs)} |")
PY
echo
"$work/syncctl" --addr 127.0.0.1:7500 --timeout 10m bench device-reconnect
