#!/usr/bin/env bash
# Runs every fuzz target of the module for a while each, one after the other:
#   scripts/fuzz.sh            10s each (what CI runs)
#   scripts/fuzz.sh 10m        a local session
#   scripts/fuzz.sh 10m ./fsm  one package's targets
# A crasher is written to the package's testdata/fuzz/<target>/ by go test:
# fix it and commit the file, so the corpus grows with every crash found.
# Set FUZZ_PARALLEL to bound the workers (default: all cores) and
# FUZZ_MINIMIZE to bound the minimisation of each new input (default 5s:
# go's 60s default spends short sessions shrinking instead of fuzzing).
set -euo pipefail
cd "$(dirname "$0")/.."

fuzztime=${1:-10s}
shift || true
pkgs=("${@:-./...}")
minimize=${FUZZ_MINIMIZE:-5s}
parallel=()
if [ -n "${FUZZ_PARALLEL:-}" ]; then parallel=(-parallel "$FUZZ_PARALLEL"); fi

# corpus lists a target's committed and newly written inputs, so a failure
# can be told apart from a failure that wrote no input.
corpus() { ls "$1/testdata/fuzz/$2" 2>/dev/null | sort || true; }

status=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for pkg in $(go list "${pkgs[@]}"); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    echo "== $pkg $target ($fuzztime)"
    before=$(corpus "$dir" "$target")
    if go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" "${parallel[@]}" "$pkg" 2>&1 | tee "$log"; [ "${PIPESTATUS[0]}" -eq 0 ]; then
      continue
    fi
    # Go's fuzz coordinator can fail a target with a bare "context deadline
    # exceeded" when -fuzztime runs out while a worker is mid-input on a
    # loaded machine (golang/go#75804): no input is written and nothing
    # failed. That case is replayed over the whole corpus; anything else,
    # or a replay that fails, is a finding.
    if [ "$(corpus "$dir" "$target")" = "$before" ] && grep -q '^    context deadline exceeded$' "$log" &&
      ! grep -q -e '^panic:' -e '--- FAIL: .*/' -e 'Failing input written' "$log"; then
      echo "fuzz: $pkg $target stopped on the coordinator's deadline with no input written; replaying its corpus"
      if go test -run "^${target}\$" -count 1 "$pkg"; then
        continue
      fi
    fi
    echo "fuzz: $pkg $target failed; the crasher is under its testdata/fuzz/$target/"
    status=1
  done
done
exit $status
