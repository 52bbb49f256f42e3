#!/usr/bin/env bash
# The growth benchmark: fills a 3-node syncd cluster on 127.0.0.1 step by
# step and prints, after each step, appends/s and p99 of that step, disk
# bytes per stored entry and anonymous RSS per node; then the restart time
# of a node holding it all, and the time a new node takes to catch up, by
# snapshot, on the replicas the placement moves to it.
#   scripts/bench-growth.sh [--entries 10000000] [--step 1000000] [--timelines 1000000]
#                           [--groups 4] [--clients 64] [--size 256] [--dir DIR]
# Every node holds every group (3 replicas), so each node stores every entry.
# Disk is what the data dirs occupy (du: allocated blocks, preallocated WAL
# segments and retained snapshots included). Nothing else should run on
# the machine meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."

entries=10000000 step=1000000 timelines=1000000 groups=4 clients=64 size=256 dir=""
while [ $# -gt 0 ]; do
  case $1 in
    --entries) entries=$2; shift 2 ;;
    --step) step=$2; shift 2 ;;
    --timelines) timelines=$2; shift 2 ;;
    --groups) groups=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --dir) dir=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done

work=${dir:-$(mktemp -d /tmp/syncstore-growth.XXXXXX)}
mkdir -p "$work"
pids=()
# shellcheck source=scripts/lib/syncd-cluster.sh
. scripts/lib/syncd-cluster.sh
trap stop_all EXIT
go build -o "$work/syncd" ./cmd/syncd
go build -o "$work/syncctl" ./cmd/syncctl

addrs=127.0.0.1:7610,127.0.0.1:7620,127.0.0.1:7630
start_syncd "$work/n1" 7610 "$groups"
for _ in $(seq 1 100); do "$work/syncctl" --addr 127.0.0.1:7610 --timeout 1s status >/dev/null 2>&1 && break; sleep 0.1; done
start_syncd "$work/n2" 7620 "$groups" 127.0.0.1:7610
start_syncd "$work/n3" 7630 "$groups" 127.0.0.1:7610
settled 127.0.0.1:7610 3

rss_mib() { awk '/^RssAnon:/ {printf "%.0f\n", $2/1024}' "/proc/$1/status"; }
disk_bytes() { du -s --block-size=1 "$1" | cut -f1; }

# caught_up ADDR NODES HOSTED [NODE MIN]: every group has a quorum, 3
# voters, no non-voter and no replica behind its leader's commit index, the
# NODES nodes answer, they host HOSTED replicas in all, and NODE hosts at
# least MIN.
caught_up() {
  "$work/syncctl" --addr "$1" --timeout 5s status --json 2>/dev/null | python3 2>/dev/null -c '
import json, sys
v = json.load(sys.stdin)
nodes, hosted = int(sys.argv[1]), int(sys.argv[2])
ok = v["all_groups_have_quorum"] and v["groups"] and sum(n.get("error") is None for n in v["nodes"]) == nodes
ok = ok and all(len(g["voters"]) == 3 and not g.get("nonvoters") and not any((g.get("lag") or {}).values()) for g in v["groups"])
ok = ok and sum(n.get("groups_hosted", 0) for n in v["nodes"]) == hosted
if len(sys.argv) > 3:
    ok = ok and sum(n.get("groups_hosted", 0) for n in v["nodes"] if n["id"] == sys.argv[3]) >= int(sys.argv[4])
sys.exit(0 if ok else 1)' "${@:2}"
}

wait_caught_up() { # wait_caught_up ARGS of caught_up: the seconds until it holds
  local t0; t0=$(date +%s.%N)
  until caught_up "$@"; do sleep 0.2; done
  echo "$(date +%s.%N) - $t0" | bc
}

echo "# growth: 3 nodes, $groups groups, $clients clients, ${size}-byte payloads over $timelines timelines, in steps of $step (data in $work)"
printf '%-12s %-10s %-9s %-16s %s\n' entries appends/s p99_ms disk_B/entry/node anon_RSS_MiB/node
stored=0
while [ "$stored" -lt "$entries" ]; do
  n=$((entries - stored < step ? entries - stored : step))
  out=$("$work/syncctl" --addr "$addrs" --timeout 10s --json bench --clients "$clients" --size "$size" --timelines "$timelines" --count "$n" --duration 0)
  read -r ok errs rate p99 < <(echo "$out" | python3 -c 'import json,sys; v=json.load(sys.stdin); print(v["ok"], v["errors"], round(v["appends_per_second"]), round(v["p99_ns"]/1e6, 2))')
  stored=$((stored + ok))
  disk=0
  for d in n1 n2 n3; do disk=$((disk + $(disk_bytes "$work/$d"))); done
  rss=$(for p in "${pids[@]}"; do rss_mib "$p"; done | paste -sd/)
  printf '%-12s %-10s %-9s %-16s %s\n' "$stored" "$rate" "$p99" "$((disk / 3 / stored))" "$rss"
  [ "$errs" -eq 0 ] || echo "  ($errs appends failed in this step)"
done
for d in n1 n2 n3; do echo "node $d: $(du -sh "$work/$d" | cut -f1) on disk; groups' newest snapshots: $(find "$work/$d/groups" -name state.bin -printf '%s\n' 2>/dev/null | sort -n | tail -"$groups" | awk '{printf "%.0fMiB ", $1/1048576}')"; done

# Restart: stop n3 cleanly, start it again, time until it serves and has
# caught up (no writes meanwhile).
kill "${pids[2]}"; wait "${pids[2]}" 2>/dev/null || true
# Info logs from here on: they say what a restart replays and what a new
# replica restores.
export SYNCD_FLAGS="${SYNCD_FLAGS:-} --log-level info"
start_syncd "$work/n3" 7630 "$groups" 127.0.0.1:7610
pids=("${pids[0]}" "${pids[1]}" "${pids[3]}")
secs=$(wait_caught_up 127.0.0.1:7630 3 $((groups * 3)))
echo "restart of n3 (SIGTERM, start, caught up): $(printf '%.1f' "$secs") s"
grep -h "replay\|rebuil" "$work/n3.log" | tail -4

# Catch-up: a fourth node joins; the placement moves replicas to it, each
# a new replica that catches up by snapshot from its group's leader.
start_syncd "$work/n4" 7640 "$groups" 127.0.0.1:7610
secs=$(wait_caught_up 127.0.0.1:7610 4 $((groups * 3)) n4 $((groups * 3 / 4)))
moved=$("$work/syncctl" --addr 127.0.0.1:7640 --timeout 5s status --json | python3 -c 'import json,sys; v=json.load(sys.stdin); print(sum(n.get("groups_hosted",0) for n in v["nodes"] if n["id"]=="n4"))')
echo "new node n4: $moved replicas placed on it caught up by snapshot in $(printf '%.1f' "$secs") s (join to all groups caught up, 3 voters each)"
grep -h "restor\|snapshot" "$work/n4.log" | tail -5
