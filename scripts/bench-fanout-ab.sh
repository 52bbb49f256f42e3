#!/usr/bin/env bash
# Fan-out of two builds, in alternating rounds on one fresh node each time:
# REV (a git revision, built in a temporary worktree) against the working
# tree. `syncctl bench fanout` (200 members, 100 messages one at a time)
# gives send -> every member latency; server CPU is the node's
# utime+stime per delivery (members x messages).
#   scripts/bench-fanout-ab.sh REV [--rounds 3]
set -euo pipefail
cd "$(dirname "$0")/.."
rev=${1:?usage: scripts/bench-fanout-ab.sh REV [--rounds N]}
rounds=3
[ "${2:-}" = --rounds ] && rounds=$3
work=$(mktemp -d)
pids=()
trap 'stop_all; git worktree remove --force "$work/old" 2>/dev/null; rm -rf "$work"' EXIT
# shellcheck source=lib/syncd-cluster.sh
source scripts/lib/syncd-cluster.sh
git worktree add -q "$work/old" "$rev"
(cd "$work/old" && go build -o "$work/syncd-old" ./cmd/syncd)
go build -o "$work/syncd-new" ./cmd/syncd
go build -o "$work/syncctl" ./cmd/syncctl
echo "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); one node, 8 groups; old = $rev, new = the working tree"
for round in $(seq "$rounds"); do
  for v in old new; do
    cp "$work/syncd-$v" "$work/syncd"
    start_syncd "$work/n-$v-$round" 7700 8
    settled 127.0.0.1:7700 1
    "$work/syncctl" --addr 127.0.0.1:7700 bench fanout --members 100 --messages 20 >/dev/null # warm up
    t0=$(cpu_ticks)
    out=$("$work/syncctl" --addr 127.0.0.1:7700 --json bench fanout --members 200 --messages 100)
    t1=$(cpu_ticks)
    python3 - "$v" "$round" "$t0" "$t1" "$hz" "$out" <<'PY'
import json, sys
v, rnd, t0, t1, hz, out = sys.argv[1:]
r = json.loads(out)
cpu = (int(t1) - int(t0)) / int(hz) * 1e6 / (200 * 100)
print(f"{v} round {rnd}: send -> all members p50 {r['after_send_p50_ns']/1e6:.1f} ms, p99 {r['after_send_p99_ns']/1e6:.1f} ms; server CPU {cpu:.1f} µs per delivery")
PY
    stop_all
  done
done
