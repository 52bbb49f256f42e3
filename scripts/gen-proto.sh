#!/usr/bin/env bash
# Regenerates every *.pb.go from the .proto files. Generated code is committed;
# run this after editing a .proto. protoc comes from Debian's protobuf-compiler,
# the Go plugins from the Go module proxy at the pinned versions below.
set -euo pipefail
cd "$(dirname "$0")/.."

PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.0

if ! command -v protoc >/dev/null 2>&1; then
  echo "gen-proto: installing protoc (Debian protobuf-compiler)" >&2
  if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq protobuf-compiler >/dev/null
fi

bin="$PWD/.bin"
mkdir -p "$bin"
GOBIN="$bin" go install "google.golang.org/protobuf/cmd/protoc-gen-go@${PROTOC_GEN_GO_VERSION}"
GOBIN="$bin" go install "google.golang.org/grpc/cmd/protoc-gen-go-grpc@${PROTOC_GEN_GO_GRPC_VERSION}"
export PATH="$bin:$PATH"

protoc -I fsm/proto --go_out=. --go_opt=module=github.com/syncstore/syncstore \
  fsm/proto/command.proto
protoc -I rpc/proto --go_out=. --go_opt=module=github.com/syncstore/syncstore \
  --go-grpc_out=. --go-grpc_opt=module=github.com/syncstore/syncstore \
  rpc/proto/syncstore/v1/requests.proto rpc/proto/syncstore/v1/sync.proto rpc/proto/syncstore/v1/admin.proto rpc/proto/syncstore/v1/records.proto rpc/proto/syncstore/v1/devices.proto
