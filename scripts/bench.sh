#!/usr/bin/env bash
# Runs `syncctl bench` against fresh clusters on this machine (127.0.0.1):
# for each topology (single node, three nodes) and each shard count, for each
# client count, REPEAT times, one after the other in the same run. Usage:
#   scripts/bench.sh [--topologies "single 3-node"] [--shards "8"] [--clients "1 64"]
#                    [--duration 10s] [--repeat 3] [--size 256] [--timelines 1000]
#                    [--modes "append push fanout reconnect"] [--members 200] [--messages 100]
# Modes: append (appends/s and latency), push (append ack -> subscriber, with
# --timelines subscribed), fanout (send -> all --members have it), reconnect
# (bytes pulled by a device that missed 10 of 10,000 entries vs the whole).
set -euo pipefail
cd "$(dirname "$0")/.."

topologies="single 3-node" shards=8 clients="1 64" duration=10s repeat=3 size=256 timelines=1000
modes=append members=200 messages=100
while [ $# -gt 0 ]; do
  case "$1" in
    --topologies) topologies=$2; shift 2 ;;
    --shards) shards=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --timelines) timelines=$2; shift 2 ;;
    --modes) modes=$2; shift 2 ;;
    --members) members=$2; shift 2 ;;
    --messages) messages=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d)
pids=()
# shellcheck source=scripts/lib/syncd-cluster.sh
. scripts/lib/syncd-cluster.sh # relative to the checkout: the script cd-ed there
trap 'stop_all; rm -rf "$work"' EXIT

go build -o "$work/syncd" ./cmd/syncd
go build -o "$work/syncctl" ./cmd/syncctl

run() { # label addrs
  for m in $modes; do
    case "$m" in
      append|push)
        for c in $clients; do
          for r in $(seq 1 "$repeat"); do
            echo "== $1, $m, $c clients, run $r"
            sub=(); [ "$m" = push ] && sub=(push)
            "$work/syncctl" --addr "$2" bench "${sub[@]}" --clients "$c" --size "$size" --timelines "$timelines" --duration "$duration" | tail -n +2
          done
        done ;;
      fanout)
        for r in $(seq 1 "$repeat"); do
          echo "== $1, fanout, run $r"
          "$work/syncctl" --addr "$2" bench fanout --members "$members" --messages "$messages" --size "$size" | tail -n +2
        done ;;
      reconnect)
        for r in $(seq 1 "$repeat"); do
          echo "== $1, reconnect, run $r"
          "$work/syncctl" --addr "$2" bench reconnect --size "$size" | tail -n +2
        done ;;
      *) echo "unknown mode $m" >&2; exit 2 ;;
    esac
  done
}

for s in $shards; do
  for topo in $topologies; do
    dir="$work/$topo-$s"
    mkdir -p "$dir"
    case "$topo" in
      single)
        start_syncd "$dir/n1" 7500 "$s"
        addrs=127.0.0.1:7500
        settled "$addrs" 1 ;;
      3-node)
        start_syncd "$dir/n1" 7510 "$s"
        settled 127.0.0.1:7510 1
        start_syncd "$dir/n2" 7520 "$s" 127.0.0.1:7510
        start_syncd "$dir/n3" 7530 "$s" 127.0.0.1:7510
        addrs=127.0.0.1:7510,127.0.0.1:7520,127.0.0.1:7530
        settled "$addrs" 3 ;;
      *) echo "unknown topology $topo" >&2; exit 2 ;;
    esac
    run "$topo, $s groups" "$addrs"
    stop_all
  done
done
