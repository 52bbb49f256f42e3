#!/usr/bin/env bash
# The write path against etcd, in one run on this machine, one system loaded
# at a time: 3 etcd 3.6.8 members, then 3 syncd nodes with each group count,
# each driven by its own light Go tool (etcd's benchmark, syncctl bench) at
# each client count with 256-byte values. Prints one table: writes/s, p50,
# p99, server CPU-µs per acknowledged write (utime+stime of the three server
# processes over the run / writes), fsyncs per second per node (etcd: WAL
# fsyncs + backend commits from its metrics; syncd: its
# syncstore_storage_fsyncs_total counter, "-" where a build has none), and
# the ratios to etcd at the same client count.
# A second table runs syncd again at the same offered load for every group
# count (64 clients paced to --same-load appends/s in all, 800 by default),
# so that fsyncs per second per node compare at equal work.
#   scripts/bench-vs-etcd.sh [--groups "1 8 64"] [--clients "1 64"] [--duration 10s] [--same-load 800]
# etcd and its benchmark tool are built from the Go module proxy into
# $ETCD_BENCH_BIN (default ~/.cache/etcd-bench/bin) the first time.
set -euo pipefail
cd "$(dirname "$0")/.."

groups="1 8 64" clients="1 64" duration=10s size=256 same_load=800
while [ $# -gt 0 ]; do
  case "$1" in
    --groups) groups=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    --duration) duration=$2; shift 2 ;;
    --same-load) same_load=$2; shift 2 ;;
    *) echo "unknown flag $1" >&2; exit 2 ;;
  esac
done
secs=${duration%s}

bin=${ETCD_BENCH_BIN:-$HOME/.cache/etcd-bench/bin}
etcd_version=v3.6.8
work=$(mktemp -d)
pids=()
# shellcheck source=scripts/lib/syncd-cluster.sh
. scripts/lib/syncd-cluster.sh # relative to the checkout: the script cd-ed there
trap 'stop_all; rm -rf "$work"' EXIT

# etcd's go.mod files carry replace directives, so `go install pkg@version`
# is refused: build from a scratch module that requires them.
build_etcd() {
  local scratch=${ETCD_BENCH_BUILD:-$HOME/.cache/etcd-bench/build}
  mkdir -p "$bin" "$scratch"
  (
    cd "$scratch"
    [ -f go.mod ] || go mod init scratch/etcdbuild >/dev/null
    printf '//go:build tools\npackage tools\nimport (\n\t_ "go.etcd.io/etcd/server/v3"\n\t_ "go.etcd.io/etcd/etcdctl/v3"\n\t_ "go.etcd.io/etcd/v3/tools/benchmark"\n)\n' > tools.go
    go get go.etcd.io/etcd/v3@$etcd_version go.etcd.io/etcd/server/v3@$etcd_version go.etcd.io/etcd/etcdctl/v3@$etcd_version
    go mod tidy
    go build -o "$bin/etcd" go.etcd.io/etcd/server/v3
    go build -o "$bin/etcdctl" go.etcd.io/etcd/etcdctl/v3
    go build -o "$bin/benchmark" go.etcd.io/etcd/v3/tools/benchmark
  ) >&2
}
[ -x "$bin/etcd" ] && [ -x "$bin/benchmark" ] && [ -x "$bin/etcdctl" ] || build_etcd
go build -o "$work/syncd" ./cmd/syncd
go build -o "$work/syncctl" ./cmd/syncctl

hz=$(getconf CLK_TCK)
# cpu_ticks sums utime+stime of the server processes.
cpu_ticks() { local t=0; for p in "${pids[@]}"; do t=$((t + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo $t; }
# metric_sum URL NAME...: the sum of the named counters on a /metrics page.
metric_sum() {
  local url=$1; shift
  curl -fsS "$url" 2>/dev/null | python3 -c '
import sys
names = set(sys.argv[1:]); total = 0.0; seen = False
for line in sys.stdin:
    if line.startswith("#"): continue
    parts = line.split()
    if len(parts) >= 2 and parts[0].split("{")[0] in names:
        total += float(parts[1]); seen = True
print(total if seen else "-")' "$@"
}
fsyncs_total() { # metrics URLs..., counter names after --
  local urls=() names=() t=0 v
  while [ "$1" != -- ]; do urls+=("$1"); shift; done; shift; names=("$@")
  for u in "${urls[@]}"; do
    v=$(metric_sum "$u" "${names[@]}")
    [ "$v" = - ] && { echo -; return; }
    t=$(python3 -c "print($t + $v)")
  done
  echo "$t"
}

results="$work/results.tsv" # system groups clients writes/s p50ms p99ms cpu_us_per_write fsyncs_per_s_per_node

measure() { # system groups clients metric-urls(csv) counter-names(csv) -- command...
  local system=$1 groups=$2 c=$3 urls names
  IFS=, read -r -a urls <<< "$4"; IFS=, read -r -a names <<< "$5"; shift 6
  local t0 f0 f1 t1 out
  t0=$(cpu_ticks); f0=$(fsyncs_total "${urls[@]}" -- "${names[@]}")
  local start=$(date +%s.%N)
  out=$("$@")
  local end=$(date +%s.%N)
  t1=$(cpu_ticks); f1=$(fsyncs_total "${urls[@]}" -- "${names[@]}")
  python3 - "$system" "$groups" "$c" "$t0" "$t1" "$hz" "$f0" "$f1" "$start" "$end" "$out" >> "$results" <<'EOF'
import json, re, sys
system, groups, c, t0, t1, hz, f0, f1, start, end, out = sys.argv[1:]
if system == "etcd":
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    pct = {m.group(1): float(m.group(2)) * 1000 for m in re.finditer(r"(\d+(?:\.\d+)?)% in ([\d.]+) secs", out)}
    p50, p99 = pct["50"], pct["99"]
    elapsed = float(re.search(r"Total:\s+([\d.]+) secs", out).group(1))
    writes = rate * elapsed
else:
    r = json.loads(out)
    rate, p50, p99 = r["appends_per_second"], r["p50_ns"] / 1e6, r["p99_ns"] / 1e6
    writes = r["ok"]
cpu_us = (int(t1) - int(t0)) / int(hz) * 1e6 / writes
wall = float(end) - float(start)
fs = "-" if "-" in (f0, f1) else "%.0f" % ((float(f1) - float(f0)) / wall / 3)
print(f"{system}\t{groups}\t{c}\t{rate:.0f}\t{p50:.2f}\t{p99:.2f}\t{cpu_us:.0f}\t{fs}")
EOF
}

echo "== etcd $etcd_version, 3 members" >&2
cluster="m1=http://127.0.0.1:23801,m2=http://127.0.0.1:23802,m3=http://127.0.0.1:23803"
eps=127.0.0.1:23791,127.0.0.1:23792,127.0.0.1:23793
for i in 1 2 3; do
  "$bin/etcd" --name m$i --data-dir "$work/etcd-m$i" \
    --listen-client-urls http://127.0.0.1:2379$i --advertise-client-urls http://127.0.0.1:2379$i \
    --listen-peer-urls http://127.0.0.1:2380$i --initial-advertise-peer-urls http://127.0.0.1:2380$i \
    --initial-cluster "$cluster" --initial-cluster-token bench --initial-cluster-state new \
    --log-level warn 2> "$work/etcd-m$i.log" &
  pids+=($!)
done
for _ in $(seq 1 150); do "$bin/etcdctl" --endpoints=$eps endpoint health >/dev/null 2>&1 && break; sleep 0.2; done
leader=$("$bin/etcdctl" --endpoints=$eps endpoint status -w json | python3 -c 'import json,sys; d=json.load(sys.stdin); print([e["Endpoint"] for e in d if e["Status"]["leader"]==e["Status"]["header"]["member_id"]][0])')
etcd_metrics=http://127.0.0.1:23791/metrics,http://127.0.0.1:23792/metrics,http://127.0.0.1:23793/metrics
for c in $clients; do
  conns=$(( c < 8 ? c : 8 ))
  # etcd's tool runs a fixed count: size it to about --duration at the
  # rates measured here (1,200/s with 1 client, 6,500/s with 64).
  total=$(( c == 1 ? 1200 * secs : 6500 * secs ))
  echo "== etcd, $c clients" >&2
  measure etcd - "$c" "$etcd_metrics" etcd_disk_wal_fsync_duration_seconds_count,etcd_disk_backend_commit_duration_seconds_count -- \
    "$bin/benchmark" --endpoints="$leader" --precise --clients="$c" --conns="$conns" put --key-size=32 --val-size=$size \
    --total="$total" --sequential-keys --key-space-size=1000000
done
stop_all

for g in $groups; do
  echo "== syncd, 3 nodes, $g groups" >&2
  dir="$work/syncd-$g"; mkdir -p "$dir"
  start_syncd "$dir/n1" 7610 "$g"
  settled 127.0.0.1:7610 1
  start_syncd "$dir/n2" 7620 "$g" 127.0.0.1:7610
  start_syncd "$dir/n3" 7630 "$g" 127.0.0.1:7610
  addrs=127.0.0.1:7610,127.0.0.1:7620,127.0.0.1:7630
  settled "$addrs" 3
  for c in $clients; do
    echo "== syncd, $g groups, $c clients" >&2
    measure syncd "$g" "$c" http://127.0.0.1:7613/metrics,http://127.0.0.1:7623/metrics,http://127.0.0.1:7633/metrics syncstore_storage_fsyncs_total -- \
      "$work/syncctl" --addr "$addrs" --json bench --clients "$c" --size "$size" --timelines 1000 --duration "$duration"
  done
  if [ "$same_load" != 0 ]; then
    echo "== syncd, $g groups, 64 clients paced to $same_load appends/s" >&2
    measure syncd@load "$g" 64 http://127.0.0.1:7613/metrics,http://127.0.0.1:7623/metrics,http://127.0.0.1:7633/metrics syncstore_storage_fsyncs_total -- \
      "$work/syncctl" --addr "$addrs" --json bench --clients 64 --rate "$same_load" --size "$size" --timelines 1000 --duration "$duration"
  fi
  stop_all
done

python3 - "$results" "$(nproc)" "$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)" "$same_load" <<'EOF'
import sys
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
etcd = {r[2]: r for r in rows if r[0] == "etcd"}
print(f"one run, {sys.argv[2]} cores ({sys.argv[3].strip()}), 3 servers on 127.0.0.1, 256-byte writes")
print(f"| system | groups | clients | writes/s | p50 ms | p99 ms | server CPU-µs/write | fsyncs/s/node | writes/s vs etcd | p50 vs etcd |")
print(f"|---|---|---|---|---|---|---|---|---|---|")
for s, g, c, rate, p50, p99, cpu, fs in rows:
    if s == "syncd@load":
        continue
    e = etcd.get(c)
    ratio = f"{float(rate) / float(e[3]):.2f}x" if e else ""
    p50r = f"{float(p50) / float(e[4]):.2f}x" if e else ""
    print(f"| {s} | {g} | {c} | {float(rate):,.0f} | {p50} | {p99} | {cpu} | {fs} | {ratio} | {p50r} |")
load = [r for r in rows if r[0] == "syncd@load"]
if load:
    print()
    print(f"syncd at the same offered load ({sys.argv[4]} appends/s from 64 clients)")
    print(f"| groups | writes/s | p50 ms | p99 ms | server CPU-µs/write | fsyncs/s/node |")
    print(f"|---|---|---|---|---|---|")
    for s, g, c, rate, p50, p99, cpu, fs in load:
        print(f"| {g} | {float(rate):,.0f} | {p50} | {p99} | {cpu} | {fs} |")
EOF
