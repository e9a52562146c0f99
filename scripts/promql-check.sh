#!/usr/bin/env bash
# Builds scripts/promql-check (PromQL parsed by Prometheus's own parser, Go module proxy only)
# into the cache if missing, and prints the binary's path. Rebuilt when its sources change.
# Cold build: a few minutes on 2 cores (the parser's dependencies); then instant.
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"
SF_LOG_TAG=promql-check

CACHE="$(sf_cache_dir)"
SRC="$SCRIPT_DIR/promql-check"
hash="$(cat "$SRC/main.go" "$SRC/go.mod" "$SRC/go.sum" | sha256sum | cut -c1-12)"
BIN="$CACHE/bin/promql-check-$hash"
if [[ ! -x "$BIN" ]]; then
  command -v go >/dev/null || die "go not found (needed to build promql-check)"
  mkdir -p "$CACHE/bin"
  log "building promql-check (github.com/prometheus/prometheus/promql/parser)"
  (
    cd "$SRC"
    export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build"
    export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath -mod=readonly" GOWORK=off GO111MODULE=on
    go build -ldflags "-s -w" -o "$BIN.tmp" .
  ) >&2 || { rm -f "$BIN.tmp"; die "go build of promql-check failed"; }
  mv -f "$BIN.tmp" "$BIN"
fi
printf '%s\n' "$BIN"
