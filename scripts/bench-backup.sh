#!/usr/bin/env bash
# What a backup and a restore of a full cluster cost. A 3-node cluster on
# 127.0.0.1 is filled (syncctl bench fill: --entries timeline entries by
# conversation sends, --collections collections of 10 records), then:
#  - write latency: rounds of a paced `syncctl bench` (same rate, so they
#    are compared at the same load) without a backup, with backups taken
#    one after another for the whole run, and with backups paced to
#    --backup-mb-per-s (syncctl backup --max-mb-per-s) likewise; medians;
#  - backup: MB/s of every backup taken (syncctl backup --json), and the
#    servers' CPU (utime+stime) per backup taken alone;
#  - restore: syncd --restore of the backup into a new data dir until it
#    serves (one node), then two empty nodes joining until every group has
#    three voters again.
#   scripts/bench-backup.sh [--entries 1000000] [--collections 10000] [--groups 8] [--rounds 3] [--duration 20s] [--rate 400] [--backup-mb-per-s 20]
set -euo pipefail
cd "$(dirname "$0")/.."
entries=1000000 collections=10000 groups=8 rounds=3 duration=20s rate=400 paced=20
while [ $# -gt 0 ]; do
  case "$1" in
    --entries) entries=$2; shift 2 ;;
    --collections) collections=$2; shift 2 ;;
    --groups) groups=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --rate) rate=$2; shift 2 ;;
    --backup-mb-per-s) paced=$2; shift 2 ;;
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
ctl() { "$work/syncctl" --addr "$addrs" --timeout 30s "$@"; }

echo "machine: $(nproc) cores,$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2); $groups groups, 3 nodes"
start_three "$groups"
ctl --json bench fill --entries "$entries" --collections "$collections" >"$work/fill.json"
python3 - "$work/fill.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
c = r["config"]
print(f"filled: {r['entries']:,} entries ({r['sends']:,} sends to {c['Members']} members), {r['collections']:,} collections of {c['Records']} records, in {r['took_ns'] / 1e9:.0f} s")
PY
echo "data dirs: $(du -sh "$work/a" | cut -f1) per node"

oneline() { python3 -c 'import json, sys; print(json.dumps(json.load(sys.stdin)))'; }
# backup_once [LOG [FLAGS...]]: one backup, its JSON line appended to LOG.
backup_once() { local log=${1:-backups.jsonl}; shift || true; ctl --json backup --out "$work/cluster.backup" --force "$@" | oneline >>"$work/$log"; }
write_bench() { ctl --json bench --clients 16 --size 256 --timelines 1000 --rate "$rate" --duration "$1"; }
backup_once # warm
write_bench 3s >/dev/null
for round in $(seq "$rounds"); do
  echo "quiet $(write_bench "$duration" | oneline)" >>"$work/writes"
  write_bench "$duration" >"$work/busy.json" &
  bench_pid=$!
  n=0
  while kill -0 "$bench_pid" 2>/dev/null; do backup_once; n=$((n + 1)); done
  wait "$bench_pid"
  echo "busy $(oneline <"$work/busy.json")" >>"$work/writes"
  write_bench "$duration" >"$work/paced.json" &
  bench_pid=$!
  while kill -0 "$bench_pid" 2>/dev/null; do backup_once paced.jsonl --max-mb-per-s "$paced"; done
  wait "$bench_pid"
  echo "paced $(oneline <"$work/paced.json")" >>"$work/writes"
  echo "round $round done ($n backups during the busy run)" >&2
done
# One backup alone, for the servers' CPU.
t0=$(cpu_ticks)
backup_once
t1=$(cpu_ticks)
echo "$t0 $t1" >"$work/backup-cpu"
ctl --json backup verify "$work/cluster.backup" >"$work/verify.json"
size=$(stat -c %s "$work/cluster.backup")

# Restore into a new cluster on other ports.
stop_all
start=$(date +%s.%N)
SYNCD_FLAGS="--restore $work/cluster.backup" start_syncd "$work/r1" 7600 "$groups"
settled 127.0.0.1:7600 1
one=$(date +%s.%N)
r1_ticks=$(cpu_ticks)
start_syncd "$work/r2" 7610 "$groups" 127.0.0.1:7600
start_syncd "$work/r3" 7620 "$groups" 127.0.0.1:7600
settled 127.0.0.1:7600,127.0.0.1:7610,127.0.0.1:7620 3
three=$(date +%s.%N)
python3 - "$hz" "$work" "$size" "$start" "$one" "$three" "$r1_ticks" "$paced" <<'PY'
import json, statistics, sys
hz, work, size, start, one, three, r1_ticks, paced = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), *map(float, sys.argv[4:7]), int(sys.argv[7]), sys.argv[8]
backups = [json.loads(l) for l in open(f"{work}/backups.jsonl")]
mbps = [b["mb_per_s"] for b in backups]
t0, t1 = map(int, open(f"{work}/backup-cpu").read().split())
verify = json.load(open(f"{work}/verify.json"))
paced_mbps = [json.loads(l)["mb_per_s"] for l in open(f"{work}/paced.jsonl")]
rows = {"quiet": [], "busy": [], "paced": []}
for line in open(f"{work}/writes"):
    which, out = line.split(" ", 1)
    r = json.loads(out)
    rows[which].append((r["appends_per_second"], r["p50_ns"] / 1e6, r["p99_ns"] / 1e6, r["errors"]))
print(f"backup: {size / 1e6:,.0f} MB, {len(verify['manifest']['parts'])} parts; {len(backups)} backups, "
      f"median {statistics.median(mbps):.1f} MB/s (min {min(mbps):.1f}, max {max(mbps):.1f}); "
      f"servers' CPU for one backup alone {(t1 - t0) / hz:.1f} s")
print(f"paced backups (--max-mb-per-s {paced}): {len(paced_mbps)}, median {statistics.median(paced_mbps):.1f} MB/s")
print(f"restore: {one - start:.1f} s until the restoring node serves (its CPU {r1_ticks / hz:.1f} s); "
      f"{three - start:.1f} s until two joined nodes hold every group (3 voters each)")
print("| writes (paced, 16 clients) | appends/s | p50 ms | p99 ms | errors |")
print("|---|---|---|---|---|")
med = {}
label = {"quiet": "without a backup", "busy": "during backups", "paced": f"during backups paced to {paced} MB/s"}
for w in ("quiet", "busy", "paced"):
    med[w] = [statistics.median(x[i] for x in rows[w]) for i in range(3)]
    print(f"| {label[w]} | {med[w][0]:,.0f} | {med[w][1]:.2f} | {med[w][2]:.2f} | {sum(x[3] for x in rows[w])} |")
q = med["quiet"]
for w in ("busy", "paced"):
    b = med[w]
    print(f"| {label[w]} / without | {b[0]/q[0]:.2f}x | {b[1]/q[1]:.2f}x | {b[2]/q[2]:.2f}x | |")
PY
