#!/usr/bin/env bash
# Prometheus and promtool, built from the Go module proxy into the cache if missing; prints the
# path of the one asked for. Cold build: 4.5 min on 2 cores here; then instant.
#
# Usage: scripts/prometheus.sh path promtool|prometheus
# Environment: PROMETHEUS_VERSION (v0.316.0, the Go module's version of Prometheus 3.x)
#   STREAMFLOW_CACHE (~/.cache/streamflow)
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"
SF_LOG_TAG=prometheus

PROMETHEUS_VERSION="${PROMETHEUS_VERSION:-v0.316.0}"
CACHE="$(sf_cache_dir)"
DIR="$CACHE/bin/prometheus-$PROMETHEUS_VERSION"

install() {
  [[ -x "$DIR/promtool" && -x "$DIR/prometheus" ]] && return 0
  command -v go >/dev/null || die "go not found (needed to build Prometheus)"
  mkdir -p "$CACHE/bin"
  exec 8>"$CACHE/bin/.prometheus-install.lock"
  flock -w 3600 8 || die "timed out waiting for another install"
  [[ -x "$DIR/promtool" && -x "$DIR/prometheus" ]] && return 0
  log "building prometheus and promtool $PROMETHEUS_VERSION (cold: about 5 min on 2 cores)"
  local started=$SECONDS m=github.com/prometheus/prometheus
  rm -rf "$DIR.tmp"
  (
    export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build"
    export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath" GOWORK=off GO111MODULE=on GOBIN="$DIR.tmp"
    go install -ldflags "-s -w" "$m/cmd/promtool@$PROMETHEUS_VERSION" "$m/cmd/prometheus@$PROMETHEUS_VERSION"
  ) >&2 || { rm -rf "$DIR.tmp"; die "building Prometheus failed"; }
  rm -rf "$DIR"
  mv "$DIR.tmp" "$DIR"
  log "built Prometheus in $((SECONDS - started))s"
}

case "${1:-} ${2:-}" in
  "path promtool" | "path prometheus") install; printf '%s\n' "$DIR/$2" ;;
  *) sf_usage ;;
esac
