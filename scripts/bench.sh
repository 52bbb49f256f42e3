#!/usr/bin/env bash
# Runs `syncctl bench` against a fresh single-node cluster and a fresh
# three-node cluster on this machine (127.0.0.1), for each client count,
# REPEAT times each, and prints one line per run. Usage:
#   scripts/bench.sh [--clients "1 64"] [--duration 10s] [--repeat 3] [--size 256] [--timelines 1000]
set -euo pipefail
cd "$(dirname "$0")/.."

clients="1 64" duration=10s repeat=3 size=256 timelines=1000
while [ $# -gt 0 ]; do
  case "$1" in
    --clients) clients=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --repeat) repeat=$2; shift 2 ;;
    --size) size=$2; shift 2 ;;
    --timelines) timelines=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/syncd" ./cmd/syncd
go build -o "$work/syncctl" ./cmd/syncctl

start() { # id grpc raft [join]
  local args=(--node-id "$1" --data-dir "$work/$1" --grpc-addr "127.0.0.1:$2" --raft-addr "127.0.0.1:$3" --log-level warn)
  [ -n "${4:-}" ] && args+=(--join "$4")
  "$work/syncd" "${args[@]}" 2>>"$work/$1.log" &
  pids+=($!)
}

wait_ready() { # addrs
  for _ in $(seq 1 100); do
    "$work/syncctl" --addr "$1" --timeout 2s head bench-ready >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "cluster at $1 did not become ready" >&2; exit 1
}

run() { # label addrs
  for c in $clients; do
    for r in $(seq 1 "$repeat"); do
      echo "== $1, $c clients, run $r"
      "$work/syncctl" --addr "$2" bench --clients "$c" --size "$size" --timelines "$timelines" --duration "$duration" | tail -n +2
    done
  done
}

start single 7500 7501
wait_ready 127.0.0.1:7500
run single 127.0.0.1:7500
kill "${pids[0]}"; wait "${pids[0]}" 2>/dev/null || true; pids=()

start n1 7510 7511
wait_ready 127.0.0.1:7510
start n2 7520 7521 127.0.0.1:7510
start n3 7530 7531 127.0.0.1:7510
addrs=127.0.0.1:7510,127.0.0.1:7520,127.0.0.1:7530
for _ in $(seq 1 100); do
  [ "$("$work/syncctl" --addr "$addrs" status --json | python3 -c 'import json,sys; print(sum(n["suffrage"]=="Voter" and n["lag"]<10 for n in json.load(sys.stdin)["nodes"]))')" = 3 ] && break
  sleep 0.2
done
run 3-node "$addrs"
