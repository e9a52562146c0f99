# shellcheck shell=bash
# Shared helpers for scripts/*.sh (kafka.sh, s3.sh, ...). Source it, don't run it:
#   source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
# Keep this small and generic: no service-specific logic here.

if [[ -n "${_SF_LIB_SH:-}" ]]; then return 0; fi
_SF_LIB_SH=1

# log MSG... : timestamped message on stderr (prefixed with the calling script's name).
log() {
  printf '[%s %s] %s\n' "$(date +%H:%M:%S)" "${SF_LOG_TAG:-$(basename "$0" .sh)}" "$*" >&2
}

# die MSG... : log and exit 1.
die() {
  log "ERROR: $*"
  exit 1
}

# sf_cache_dir : cache root, shared across clones/CI runs (outside the git tree).
sf_cache_dir() {
  local d="${STREAMFLOW_CACHE:-$HOME/.cache/streamflow}"
  mkdir -p "$d"
  printf '%s\n' "$d"
}

# sf_run_dir [NAME] : runtime state root (${STREAMFLOW_RUN_DIR:-<cache>/run}),
# or its subdirectory NAME (e.g. "kafka", "s3"). Created if missing.
sf_run_dir() {
  local d="${STREAMFLOW_RUN_DIR:-$(sf_cache_dir)/run}"
  if [[ -n "${1:-}" ]]; then d="$d/$1"; fi
  mkdir -p "$d"
  printf '%s\n' "$d"
}

# pid_alive PID : true if PID is a live (non-zombie) process.
pid_alive() {
  local pid="${1:-}"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -r "/proc/$pid/stat" ]]; then
    local stat
    stat="$(cat "/proc/$pid/stat" 2>/dev/null)" || return 1
    stat="${stat##*) }"
    [[ "${stat%% *}" != "Z" ]] || return 1
  fi
  return 0
}

# pidfile_pid PIDFILE [MATCH] : print the pid recorded in PIDFILE if that process is
# alive (and, if MATCH is given, its command line contains MATCH, guarding against
# a recycled pid). Returns 1 otherwise.
pidfile_pid() {
  local pidfile="$1" match="${2:-}" pid
  [[ -f "$pidfile" ]] || return 1
  pid="$(head -n1 "$pidfile" 2>/dev/null | tr -dc '0-9')"
  pid_alive "$pid" || return 1
  if [[ -n "$match" && -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$match" || return 1
  fi
  printf '%s\n' "$pid"
}

# stop_pidfile PIDFILE [TIMEOUT_SECONDS=60] [MATCH] : stop the process recorded in
# PIDFILE (SIGTERM, then SIGKILL after the timeout), wait until it has exited and
# remove PIDFILE. A missing or stale pid file is fine (returns 0).
stop_pidfile() {
  local pidfile="$1" timeout="${2:-60}" match="${3:-}" pid i
  if ! pid="$(pidfile_pid "$pidfile" "$match")"; then
    if [[ -f "$pidfile" ]]; then log "removing stale pid file $pidfile"; fi
    rm -f "$pidfile"
    return 0
  fi
  log "stopping pid $pid (SIGTERM, up to ${timeout}s)"
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < timeout * 5; i++)); do
    pid_alive "$pid" || break
    sleep 0.2
  done
  if pid_alive "$pid"; then
    log "pid $pid still alive after ${timeout}s, sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      pid_alive "$pid" || break
      sleep 0.2
    done
    pid_alive "$pid" && { log "pid $pid did not exit"; return 1; }
  fi
  rm -f "$pidfile"
  return 0
}

# tcp_open HOST PORT : true if a TCP connect to HOST:PORT succeeds (1s timeout).
tcp_open() {
  # shellcheck disable=SC2016  # $1/$2 are expanded by the inner bash
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null
}

# wait_for_tcp HOST PORT TIMEOUT_SECONDS [PID] : wait until HOST:PORT accepts TCP
# connections. Returns 1 on timeout, or as soon as PID (if given) has died.
wait_for_tcp() {
  local host="$1" port="$2" timeout="${3:-60}" pid="${4:-}"
  local deadline=$((SECONDS + timeout))
  while ((SECONDS < deadline)); do
    if tcp_open "$host" "$port"; then return 0; fi
    if [[ -n "$pid" ]] && ! pid_alive "$pid"; then return 1; fi
    sleep 0.5
  done
  tcp_open "$host" "$port"
}

# sf_usage [EXIT_CODE=2] : print the calling script's header comment (line 2 up to `set -euo`)
# as its usage, and exit.
sf_usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

# sf_buildah ARGS... : buildah (Debian's, as root) with the project's image storage: in the
# cache, vfs (works on any filesystem), one run root; shared by scripts/images.sh and
# scripts/cluster.sh.
sf_buildah() {
  buildah --root "$(sf_cache_dir)/buildah/storage" --runroot "$(sf_run_dir buildah)" --storage-driver vfs "$@"
}

# sf_buildah_clean : removes what builds leave in sf_buildah's storage: the working container
# buildah keeps for a stage used only by `COPY --from`, and the untagged image each rebuild of a
# tag leaves behind (about 150 MB a build otherwise, never reclaimed). Images are kept as the
# archives that `load` imports, so only tagged images need to stay.
sf_buildah_clean() {
  sf_buildah rm --all >/dev/null || log "warning: removing buildah's working containers failed"
  sf_buildah rmi --prune >/dev/null || log "warning: removing untagged images failed"
}

# sf_launch PIDFILE LOGFILE CMD... : starts CMD in its own session (Ctrl-C and the caller's
# process group do not reach it), output to LOGFILE (the last one kept as LOGFILE.prev), the
# caller's lock descriptors 7-9 closed; prints its pid. The inner bash records its pid and
# then execs CMD, so the pid file holds CMD's pid.
sf_launch() {
  local pidfile="$1" logfile="$2" pid="" i
  shift 2
  rm -f "$pidfile"
  if [[ -f "$logfile" ]]; then mv -f "$logfile" "$logfile.prev"; fi
  # shellcheck disable=SC2016
  setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "$@" </dev/null >>"$logfile" 2>&1 7>&- 8>&- 9>&- &
  for ((i = 0; i < 50; i++)); do
    pid="$(head -n1 "$pidfile" 2>/dev/null | tr -dc '0-9')" || true
    [[ -n "$pid" ]] && break
    sleep 0.1
  done
  [[ -n "$pid" ]] || die "$pidfile was not written"
  printf '%s\n' "$pid"
}

# sf_image_save NAME ARCHIVE : the image NAME of sf_buildah's storage as a docker-archive that
# keeps its name (what `scripts/cluster.sh load` imports).
sf_image_save() {
  rm -f "$2.tmp"
  sf_buildah push --quiet "$1" "docker-archive:$2.tmp:$1" >/dev/null || die "saving the image $1 failed"
  mv -f "$2.tmp" "$2"
  log "image $1: $2 ($(du -h "$2" | cut -f1))"
}
