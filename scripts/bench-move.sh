#!/usr/bin/env bash
# A slot range move under load, on one 3-node cluster (127.0.0.1) of 4
# groups: group 1's slots (0-1023) are filled with --gib GiB of timelines
# (4 KiB appends), then, in the same run:
#   1. the p99 of writes to the other slots (1024-4095) at --rate appends/s
#      for --baseline, with no move;
#   2. the same load again while all of group 1's slots move to group 2,
#      with a probe appending to the moved slots; the move's MB/s (bytes
#      copied / time from plan to cleaned), the moved slots' unavailability
#      (the probe's longest time without an acknowledgement, and the time
#      from fence to switch the move recorded) and the p99 of the other
#      slots' writes during the move.
#   scripts/bench-move.sh [--gib 1] [--rate 1000] [--baseline 30s]
set -euo pipefail
cd "$(dirname "$0")/.."
gib=1 rate=1000 baseline=30s
while [ $# -gt 0 ]; do
  case "$1" in
    --gib) gib=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --baseline) baseline=$2; shift 2 ;;
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
start_three 4
ctl() { "$work/syncctl" --addr "$addrs" "$@"; }
count=$(python3 -c "print(int($gib * (1 << 30) / 4096))")
echo "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); 3 nodes, 4 groups"
echo "fill: $count appends of 4 KiB to 4000 timelines in slots 0-1023 (group 1)"
ctl --json bench --slots 0-1023 --size 4096 --timelines 4000 --clients 32 --count "$count" --duration 0 --timeout 30s |
  python3 -c 'import json,sys; r=json.load(sys.stdin); print("  %d ok, %d errors, %.0f appends/s" % (r["ok"], r["errors"], r["appends_per_second"]))'

summary() { python3 -c 'import json,sys; r=json.load(sys.stdin); print("%s: %d ok, %d errors, %.0f/s, p50 %.2f ms, p99 %.2f ms, max %.2f ms, longest gap %.0f ms" % (sys.argv[1], r["ok"], r["errors"], r["appends_per_second"], r["p50_ns"]/1e6, r["p99_ns"]/1e6, r["max_ns"]/1e6, r["max_gap_ns"]/1e6))' "$1"; }

echo "1. no move: writes to slots 1024-4095 at $rate/s for $baseline"
ctl --json bench --slots 1024-4095 --size 256 --timelines 1000 --clients 16 --rate "$rate" --duration "$baseline" | summary "  other slots"

echo "2. move of slots 0-1023 (group 1 -> 2) with the same load, and a probe on the moved slots"
"$work/syncctl" --addr "$addrs" --json bench --slots 1024-4095 --size 256 --timelines 1000 --clients 16 --rate "$rate" --duration 1h >"$work/other.json" &
other=$!
"$work/syncctl" --addr "$addrs" --json --timeout 2s bench --slots 0-1023 --size 256 --timelines 100 --clients 1 --rate 200 --duration 1h >"$work/probe.json" &
probe=$!
sleep 3 # both loads running before the move starts
t0=$(date +%s.%N)
ctl --json slots move 0-1023 --to 2 --reason bench >"$work/move.json"
t1=$(date +%s.%N)
sleep 3
kill -TERM "$other" "$probe"
wait "$other" "$probe"
summary "  other slots" <"$work/other.json"
summary "  probe of the moved slots" <"$work/probe.json"
python3 - "$work/move.json" "$t0" "$t1" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))[0]
secs = float(sys.argv[3]) - float(sys.argv[2])
print("  move %d: %s, %d records, %.1f MiB in %.1f s = %.1f MiB/s; fenced to switch %d ms" % (
    m["id"], m["phase"], m["records"], m["bytes"] / 2**20, secs, m["bytes"] / 2**20 / secs, m["switched_ms"] - m["fenced_ms"]))
PY
