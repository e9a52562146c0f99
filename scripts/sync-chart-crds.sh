#!/usr/bin/env bash
# Keeps charts/streamflow-operator/crds/ an exact copy of the repository's crds/ (the CRDs
# crdgen writes), whatever files that holds.
#
# Usage: scripts/sync-chart-crds.sh           copy every crds/*.yaml into the chart, remove
#                                             chart CRDs that crds/ no longer has
#        scripts/sync-chart-crds.sh --check   change nothing; exit 1 and name the files that
#                                             differ, are missing or are extra
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
SF_LOG_TAG=sync-chart-crds

SRC=crds
DST=charts/streamflow-operator/crds
check=false
case "${1:-}" in
  --check) check=true ;;
  "") ;;
  *) die "usage: $0 [--check]" ;;
esac

mkdir -p "$DST"
problems=()
shopt -s nullglob
for f in "$SRC"/*; do
  name="$(basename "$f")"
  if ! cmp -s "$f" "$DST/$name"; then
    if $check; then
      if [[ -e "$DST/$name" ]]; then problems+=("$DST/$name differs from $f"); else problems+=("$DST/$name is missing"); fi
    else
      cp "$f" "$DST/$name"
      log "copied $f"
    fi
  fi
done
for f in "$DST"/*; do
  name="$(basename "$f")"
  if [[ ! -e "$SRC/$name" ]]; then
    if $check; then
      problems+=("$f is not in $SRC/")
    else
      rm -f "$f"
      log "removed $f (not in $SRC/)"
    fi
  fi
done
if ((${#problems[@]})); then
  for p in "${problems[@]}"; do log "$p"; done
  die "the chart's CRDs are out of date: run scripts/sync-chart-crds.sh"
fi
sources=("$SRC"/*)
$check && log "the chart's CRDs equal $SRC/ (${#sources[@]} files)"
exit 0
