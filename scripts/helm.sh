#!/usr/bin/env bash
# Helm, built from source with the Go toolchain (Go module proxy only), cached.
#
# Usage: scripts/helm.sh <command> [args]
#   build            build helm into the cache if missing (cold: ~9 min on 2 cores shared
#                    with other builds; then instant)
#   path             build if needed, print the binary's path
#   [helm args...]   build if needed, then run helm with these arguments
#                    (scripts/helm.sh lint charts/streamflow-operator, scripts/helm.sh install ...)
#
# Environment:
#   HELM_VERSION (v3.22.0)   HELM_BUILD_JOBS (2, go build -p)
#   STREAMFLOW_CACHE (~/.cache/streamflow): the binary is $STREAMFLOW_CACHE/bin/helm-<v>,
#     Go caches in $STREAMFLOW_CACHE/go (shared with scripts/kube.sh and scripts/s3.sh)
# Needs: go >= 1.24.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"
SF_LOG_TAG=helm

HELM_VERSION="${HELM_VERSION:-v3.22.0}"
HELM_BUILD_JOBS="${HELM_BUILD_JOBS:-2}"
[[ "$HELM_VERSION" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "HELM_VERSION must look like v3.22.0, got '$HELM_VERSION'"
[[ "$HELM_BUILD_JOBS" =~ ^[0-9]+$ ]] || die "HELM_BUILD_JOBS must be a number, got '$HELM_BUILD_JOBS'"

CACHE="$(sf_cache_dir)"
BIN_DIR="$CACHE/bin"
HELM_BIN="$BIN_DIR/helm-$HELM_VERSION"

install_helm() {
  [[ -x "$HELM_BIN" ]] && return 0
  command -v go >/dev/null 2>&1 || die "go not found: building helm needs Go >= 1.24"
  mkdir -p "$BIN_DIR"
  exec 8>"$BIN_DIR/.helm.lock"
  flock -w 1800 8 || die "another helm build is in progress (lock $BIN_DIR/.helm.lock)"
  if [[ -x "$HELM_BIN" ]]; then exec 8>&-; return 0; fi
  local gobin="$CACHE/go/helm-$HELM_VERSION" started=$SECONDS
  rm -rf "$gobin"
  log "building helm $HELM_VERSION (go install helm.sh/helm/v3/cmd/helm@$HELM_VERSION)"
  # Same Go environment as scripts/kube.sh: caches under the cache dir, static, no VCS stamp.
  # The version string is what `helm version` prints (its release builds set it the same way).
  if ! (
    export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOBIN="$gobin"
    export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath" GOWORK=off GO111MODULE=on
    cd "$CACHE" && go install -p "$HELM_BUILD_JOBS" \
      -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION" \
      "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  ) >&2; then
    rm -rf "$gobin"
    die "building helm $HELM_VERSION failed"
  fi
  "$gobin/helm" version --short >/dev/null || die "the built helm binary does not run"
  mv -f "$gobin/helm" "$HELM_BIN"
  rm -rf "$gobin"
  exec 8>&-
  log "built $HELM_BIN ($(du -h "$HELM_BIN" | cut -f1)) in $((SECONDS - started))s"
}

case "${1:-}" in
  build) install_helm ;;
  path)
    install_helm
    printf '%s\n' "$HELM_BIN"
    ;;
  "" | -h | --help | help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2 ;;
  *)
    install_helm
    exec "$HELM_BIN" "$@"
    ;;
esac
