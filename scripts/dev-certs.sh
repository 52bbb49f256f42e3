#!/usr/bin/env bash
# Makes a development CA, node and client certificates, tokens and a gossip
# key for a local cluster, and prints the syncd and syncctl command lines
# that use them:
#   scripts/dev-certs.sh DIR                  nodes n1 n2 n3
#   scripts/dev-certs.sh DIR a b c d          other node names
#   scripts/dev-certs.sh -hosts syncd.internal,10.0.0.5 DIR   extra names on every node certificate
#   scripts/dev-certs.sh -force DIR           replace what DIR holds (a new CA)
# Go's crypto (internal/devcerts), ECDSA P-256. For development and tests:
# one CA signs peers and clients, and its key is written next to them.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
# Built, not run with go run, so that DIR is relative to the caller's directory.
go build -C "$root" -o "$tmp/dev-certs" ./internal/devcerts/cmd/dev-certs
"$tmp/dev-certs" "$@"
