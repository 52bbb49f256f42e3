#!/usr/bin/env bash
# Builds the syncstore image FROM scratch around static syncd and syncctl
# binaries compiled here (no base image is pulled):
#   scripts/docker-build.sh                 tags syncstore:dev
#   scripts/docker-build.sh -t syncstore:x  another tag (any docker build flags)
# VERSION=v1.2.3 stamps the binaries' --version (internal/version); by
# default it is `git describe --always --dirty` of the checkout.
# BUILD_DIR=DIR builds the context in DIR (new or empty) and keeps it, with
# the binaries (test/docker runs that syncctl on the host).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ -n "${BUILD_DIR:-}" ]; then
  ctx="$BUILD_DIR"
  mkdir -p "$ctx"
else
  ctx="$(mktemp -d)"
  trap 'rm -rf "$ctx"' EXIT
fi

ldflags="-s -w"
VERSION="${VERSION:-$(git -C "$root" describe --always --dirty 2>/dev/null || true)}"
if [ -n "$VERSION" ]; then
  ldflags+=" -X github.com/syncstore/syncstore/internal/version.Version=$VERSION"
fi
for cmd in syncd syncctl; do
  CGO_ENABLED=0 go build -C "$root" -trimpath -ldflags "$ldflags" -o "$ctx/$cmd" "./cmd/$cmd"
done
mkdir -p -m 0700 "$ctx/data"
cp "$root/Dockerfile" "$ctx/Dockerfile"

tag=()
case " $* " in
  *" -t "*|*" --tag "*|*" --tag="*) ;;
  *) tag=(-t syncstore:dev) ;;
esac
docker build "${tag[@]}" "$@" "$ctx"
