# Sourced by the bench scripts: start syncd nodes on 127.0.0.1, wait until
# they settle, stop them. Expects $work holding the built syncd and syncctl,
# and appends every started process to the array pids.

stop_all() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  pids=()
}

# start_syncd DIR PORT GROUPS [JOIN]: node "$(basename DIR)" with gRPC on
# PORT, Raft on PORT+1, gossip on PORT+2 and /metrics on PORT+3; words in
# $SYNCD_FLAGS are passed on (to compare settings).
start_syncd() {
  local args=(--node-id "$(basename "$1")" --data-dir "$1" --grpc-addr "127.0.0.1:$2" --raft-addr "127.0.0.1:$(($2 + 1))"
    --gossip-addr "127.0.0.1:$(($2 + 2))" --debug-addr "127.0.0.1:$(($2 + 3))" --shards "$3" --log-level warn)
  [ -n "${4:-}" ] && args+=(--join "$4")
  # shellcheck disable=SC2206 # word splitting wanted
  [ -n "${SYNCD_FLAGS:-}" ] && args+=($SYNCD_FLAGS)
  "$work/syncd" "${args[@]}" 2>>"$1.log" &
  pids+=($!)
}

# settled ADDRS NODES waits until every group has a quorum, as many voters
# as it can have and no non-voter, and all NODES answer. Words in
# $SYNCCTL_FLAGS go to syncctl (--ca, --token-file of a TLS cluster).
settled() {
  for _ in $(seq 1 600); do
    # shellcheck disable=SC2086 # word splitting wanted
    if "$work/syncctl" ${SYNCCTL_FLAGS:-} --addr "$1" --timeout 2s status --json 2>/dev/null | python3 -c '
import json, sys
v = json.load(sys.stdin)
ok = v["all_groups_have_quorum"] and v["groups"] and sum(n.get("error") is None for n in v["nodes"]) == int(sys.argv[1])
ok = ok and all(len(g["voters"]) == min(3, int(sys.argv[1])) and not g.get("nonvoters") for g in v["groups"])
sys.exit(0 if ok else 1)' "$2" 2>/dev/null; then return 0; fi
    sleep 0.2
  done
  echo "cluster at $1 did not settle" >&2; exit 1
}

# cpu_ticks: utime+stime of every started process, in ticks of $hz a second.
hz=$(getconf CLK_TCK)
cpu_ticks() { local t=0; for p in "${pids[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }

# start_three GROUPS: three nodes (gRPC on 7500, 7510, 7520) of a new
# cluster of GROUPS groups, settled; sets addrs to their gRPC addresses.
start_three() {
  start_syncd "$work/a" 7500 "$1"
  settled 127.0.0.1:7500 1
  start_syncd "$work/b" 7510 "$1" 127.0.0.1:7500
  start_syncd "$work/c" 7520 "$1" 127.0.0.1:7500
  addrs=127.0.0.1:7500,127.0.0.1:7510,127.0.0.1:7520
  settled "$addrs" 3
}
