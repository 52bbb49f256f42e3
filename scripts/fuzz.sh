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

status=0
for pkg in $(go list "${pkgs[@]}"); do
  for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
    echo "== $pkg $target ($fuzztime)"
    if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$fuzztime" -fuzzminimizetime "$minimize" "${parallel[@]}" "$pkg"; then
      echo "fuzz: $pkg $target failed; the crasher is under its testdata/fuzz/$target/"
      status=1
    fi
  done
done
exit $status
