#!/usr/bin/env bash
# kstatus-tool (scripts/kstatus/): kstatus from sigs.k8s.io/cli-utils (what Flux reads) and the
# chart's Argo CD health checks run in gopher-lua (what Argo CD runs them in), built from the
# Go module proxy into the cache if missing; operator/tests/gitops.rs runs it on the objects the
# operator produces. Cold build: about 1 min; then instant (rebuilt when its source changes).
#
# Usage: scripts/kstatus.sh path          build if needed, print the binary's path
#        scripts/kstatus.sh [tool args]   build if needed, run it (status FILE, health SCRIPT FILE)
# Environment: STREAMFLOW_CACHE (~/.cache/streamflow)
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"
SF_LOG_TAG=kstatus

SRC="$SCRIPT_DIR/kstatus"
CACHE="$(sf_cache_dir)"
# Keyed by the source's content, so an edit to main.go or go.mod is never served a stale build.
KEY="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC/main.go" | sha256sum | cut -c1-16)"
BIN="$CACHE/bin/kstatus-tool-$KEY"

install() {
  [[ -x "$BIN" ]] && return 0
  command -v go >/dev/null || die "go not found (needed to build kstatus-tool)"
  mkdir -p "$CACHE/bin"
  exec 8>"$CACHE/bin/.kstatus-install.lock"
  flock -w 1800 8 || die "timed out waiting for another build of kstatus-tool"
  [[ -x "$BIN" ]] && return 0
  log "building kstatus-tool (cli-utils kstatus, gopher-lua)"
  local started=$SECONDS
  (
    export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build"
    export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath -mod=readonly" GOWORK=off GO111MODULE=on
    cd "$SRC" && go build -ldflags "-s -w" -o "$BIN.tmp" .
  ) >&2 || { rm -f "$BIN.tmp"; die "building kstatus-tool failed"; }
  mv -f "$BIN.tmp" "$BIN"
  log "built $BIN in $((SECONDS - started))s"
}

case "${1:-}" in
  path) install; printf '%s\n' "$BIN" ;;
  "" | -h | --help) sf_usage ;;
  *) install; exec "$BIN" "$@" ;;
esac
