#!/usr/bin/env bash
# scripts/s3.sh — a real S3-compatible server on 127.0.0.1 for tests and the local demo.
#
#   scripts/s3.sh install   build/cache the server binary (idempotent)
#   scripts/s3.sh binary    install if needed, print the server binary's path
#   scripts/s3.sh start     install if needed, start in the background, wait until S3
#                           answers, create buckets `landing` and `gold` (no-op if running)
#   scripts/s3.sh stop      stop the process started by this script (pid file), wait for exit
#   scripts/s3.sh status    print state; exit 0 if running, 3 if not
#   scripts/s3.sh reset     stop + wipe data
#   scripts/s3.sh env       print `export` lines for clients:  eval "$(scripts/s3.sh env)"
#   scripts/s3.sh smoke     run scripts/s3_smoke.py against the running server
#   scripts/s3.sh mkbucket NAME...   create buckets (idempotent)
#   scripts/s3.sh rmbucket NAME...   delete buckets and all they hold (SeaweedFS keeps the
#                           space of deleted objects until a vacuum; a deleted bucket's at once)
#   scripts/s3.sh logs      print the tail of the server log
#   scripts/s3.sh freeze    SIGSTOP the server: it hangs, accepting connections and answering
#                           nothing (tests of a hung S3); `thaw` (SIGCONT) lets it go on
#
# Server: SeaweedFS (`weed server -s3`: master + volume + filer + S3 gateway in one process),
# built from source with the Go toolchain (module proxy only, no prebuilt download).
# SeaweedFS passes every check in scripts/s3_smoke.py, including atomic conditional writes
# (If-None-Match: * and If-Match, also under concurrent writers).
# Set S3_IMPL=s3s-fs to use the fallback `s3s-fs` (cargo install s3s-fs, ~9 min cold) instead:
# it starts in ~1s but its If-Match is not atomic under concurrent writers (two can win) and it
# ignores If-None-Match on CopyObject.
#
# Environment:
#   S3_PORT            S3 port on 127.0.0.1 (default 9000)
#   S3_IMPL            seaweedfs (default) | s3s-fs
#   S3_START_TIMEOUT   seconds to wait for S3 to answer and take writes (default 120)
#   S3_STOP_TIMEOUT    seconds to wait after SIGTERM before SIGKILL (default 40)
#   S3_BUCKETS         buckets to create on start (default "landing gold")
#   S3_MASTER_PORT, S3_VOLUME_PORT, S3_FILER_PORT   SeaweedFS internal ports (default S3_PORT
#                      +333/+340/+350, i.e. 9333/9340/9350; each also uses port+10000 for gRPC,
#                      and the S3 gateway S3_PORT+10000). All bound to 127.0.0.1 only.
#   STREAMFLOW_CACHE   cache root (default ~/.cache/streamflow): binaries in bin/, Go caches in go/
#   STREAMFLOW_RUN_DIR runtime root (default $STREAMFLOW_CACHE/run); state lives in <it>/s3
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SF_LOG_TAG=s3 # read by log() in lib.sh
export SF_LOG_TAG
if [[ -f "$SCRIPT_DIR/lib.sh" ]]; then
  # shellcheck source=lib.sh
  source "$SCRIPT_DIR/lib.sh"
fi
# Fallbacks, only if lib.sh is absent (same names/semantics as lib.sh).
declare -F log >/dev/null || log() { printf '[%s s3] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
declare -F die >/dev/null || die() { log "ERROR: $*"; exit 1; }
declare -F sf_cache_dir >/dev/null || sf_cache_dir() {
  local d="${STREAMFLOW_CACHE:-$HOME/.cache/streamflow}"; mkdir -p "$d"; printf '%s\n' "$d"; }
declare -F sf_run_dir >/dev/null || sf_run_dir() {
  local d="${STREAMFLOW_RUN_DIR:-$(sf_cache_dir)/run}"; [[ -z "${1:-}" ]] || d="$d/$1"
  mkdir -p "$d"; printf '%s\n' "$d"; }
declare -F pid_alive >/dev/null || pid_alive() {
  [[ "${1:-}" =~ ^[0-9]+$ ]] && kill -0 "$1" 2>/dev/null &&
    [[ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" != Z ]]; }
declare -F pidfile_pid >/dev/null || pidfile_pid() {
  local pid; [[ -f "$1" ]] || return 1
  pid="$(head -n1 "$1" 2>/dev/null | tr -dc '0-9')"; pid_alive "$pid" || return 1
  if [[ -n "${2:-}" ]]; then tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2" || return 1; fi
  printf '%s\n' "$pid"; }
declare -F stop_pidfile >/dev/null || stop_pidfile() {
  local pid i; if ! pid="$(pidfile_pid "$1" "${3:-}")"; then rm -f "$1"; return 0; fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < ${2:-60} * 5; i++)); do pid_alive "$pid" || break; sleep 0.2; done
  if pid_alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; sleep 1; fi
  pid_alive "$pid" && return 1; rm -f "$1"; }
declare -F tcp_open >/dev/null || tcp_open() {
  # shellcheck disable=SC2016
  timeout 1 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$1" "$2" 2>/dev/null; }

# ---------------------------------------------------------------------------------------------
SEAWEEDFS_MODULE=github.com/seaweedfs/seaweedfs
SEAWEEDFS_VERSION="${S3_SEAWEEDFS_VERSION:-v0.0.0-20261109003541-7506e5f91cd6}"
S3S_FS_VERSION="${S3_S3S_FS_VERSION:-0.14.1}"

S3_IMPL="${S3_IMPL:-seaweedfs}"
S3_HOST=127.0.0.1
S3_PORT="${S3_PORT:-9000}"
if ! [[ "$S3_PORT" =~ ^[0-9]+$ ]] || ((S3_PORT < 1 || S3_PORT > 55000)); then
  die "S3_PORT must be a port number <= 55000 (SeaweedFS also uses S3_PORT+10000 for gRPC)"
fi
# Internal SeaweedFS ports follow S3_PORT, so a second instance only needs another S3_PORT.
S3_MASTER_PORT="${S3_MASTER_PORT:-$((S3_PORT + 333))}"
S3_VOLUME_PORT="${S3_VOLUME_PORT:-$((S3_PORT + 340))}"
S3_FILER_PORT="${S3_FILER_PORT:-$((S3_PORT + 350))}"
S3_START_TIMEOUT="${S3_START_TIMEOUT:-120}"
S3_STOP_TIMEOUT="${S3_STOP_TIMEOUT:-40}"
S3_BUCKETS="${S3_BUCKETS:-landing gold}"
read -r -a BUCKETS <<<"$S3_BUCKETS"
S3_ACCESS_KEY=streamflow
S3_SECRET_KEY=streamflow-secret
S3_REGION=us-east-1

CACHE="$(sf_cache_dir)"
BIN_DIR="$CACHE/bin"
RUN="$(sf_run_dir s3)"
DATA="$RUN/data"   # s3s-fs uses its own, see below
LOG="$RUN/server.log"
PIDFILE="$RUN/server.pid"
IMPLFILE="$RUN/server.impl"   # which implementation/binary the pid file belongs to
S3_CONFIG="$RUN/s3-identities.json"

case "$S3_IMPL" in
  seaweedfs) BIN="$BIN_DIR/weed-${SEAWEEDFS_VERSION##*-}" ;;
  s3s-fs) BIN="$BIN_DIR/s3s-fs-$S3S_FS_VERSION"; DATA="$RUN/data-s3s-fs" ;;
  *) die "unknown S3_IMPL=$S3_IMPL (expected seaweedfs or s3s-fs)" ;;
esac

# Hold an exclusive lock (fd 9) for the rest of the command so concurrent start/stop/install
# calls (e.g. parallel test harnesses) serialise instead of racing.
take_lock() {
  exec 9>"$RUN/.lock"
  flock -w 1800 9 || die "timed out waiting for lock $RUN/.lock"
}

print_env() {
  cat <<EOF
export AWS_ENDPOINT_URL=http://$S3_HOST:$S3_PORT
export AWS_ACCESS_KEY_ID=$S3_ACCESS_KEY
export AWS_SECRET_ACCESS_KEY=$S3_SECRET_KEY
export AWS_REGION=$S3_REGION
export AWS_DEFAULT_REGION=$S3_REGION
export AWS_ALLOW_HTTP=true
EOF
}

s3py() {
  AWS_ENDPOINT_URL="http://$S3_HOST:$S3_PORT" AWS_ACCESS_KEY_ID="$S3_ACCESS_KEY" \
    AWS_SECRET_ACCESS_KEY="$S3_SECRET_KEY" AWS_REGION="$S3_REGION" \
    python3 "$SCRIPT_DIR/s3_smoke.py" "$@"
}

# ---------------------------------------------------------------------------------------------
install_seaweedfs() {
  command -v go >/dev/null || die "go is not installed (need Go >= 1.26 to build SeaweedFS)"
  # All Go state under the cache root so CI and later runs reuse it.
  export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build"
  export CGO_ENABLED=0 GOFLAGS="-buildvcs=false"
  log "building SeaweedFS $SEAWEEDFS_VERSION (cold: ~10-17 min on 2 cores, ~2 GB of modules)"
  local t0=$SECONDS src tmp
  # `go install pkg@version` refuses modules whose go.mod has replace directives (SeaweedFS has
  # one), so download the module and build inside it, where its go.mod/go.sum apply.
  go mod download "$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION" || die "go mod download failed"
  src="$GOMODCACHE/$SEAWEEDFS_MODULE@$SEAWEEDFS_VERSION"
  [[ -f "$src/go.mod" ]] || die "module source not found at $src"
  tmp="$BIN.tmp.$$"
  (cd "$src" && go build -ldflags="-s -w" -o "$tmp" ./weed) || { rm -f "$tmp"; die "go build of SeaweedFS failed"; }
  mv -f "$tmp" "$BIN"
  log "built $BIN in $((SECONDS - t0))s"
}

install_s3s_fs() {
  command -v cargo >/dev/null || die "cargo is not installed"
  local t0=$SECONDS root="$CACHE/cargo-s3s-fs"
  log "building s3s-fs $S3S_FS_VERSION with cargo"
  # Own target dir (not the project's CARGO_TARGET_DIR); dropped once the binary is cached.
  CARGO_TARGET_DIR="$root/target" \
    cargo install s3s-fs --version "=$S3S_FS_VERSION" --features binary --locked --root "$root" ||
    die "cargo install s3s-fs failed"
  cp -f "$root/bin/s3s-fs" "$BIN.tmp.$$" && mv -f "$BIN.tmp.$$" "$BIN"
  rm -rf "$root"
  log "built $BIN in $((SECONDS - t0))s"
}

cmd_install() {
  mkdir -p "$BIN_DIR"
  if [[ -x "$BIN" ]]; then
    log "$S3_IMPL already installed: $BIN"
    return 0
  fi
  # Separate lock in the cache (not the run dir): installs are shared across run dirs.
  (
    exec 8>"$BIN_DIR/.s3-install.lock"
    flock -w 3600 8 || die "timed out waiting for install lock"
    [[ -x "$BIN" ]] && exit 0
    case "$S3_IMPL" in
      seaweedfs) install_seaweedfs ;;
      s3s-fs) install_s3s_fs ;;
    esac
  )
}

# ---------------------------------------------------------------------------------------------
running_pid() {
  # Pid of the server this script started, if it is still that process.
  local bin
  bin="$(cat "$IMPLFILE" 2>/dev/null || true)"
  [[ -n "$bin" ]] || bin="$BIN_DIR/"
  pidfile_pid "$PIDFILE" "$bin"
}

server_ports() {
  if [[ "$S3_IMPL" == seaweedfs ]]; then
    echo "$S3_PORT $((S3_PORT + 10000)) $S3_MASTER_PORT $((S3_MASTER_PORT + 10000))" \
      "$S3_VOLUME_PORT $((S3_VOLUME_PORT + 10000)) $S3_FILER_PORT $((S3_FILER_PORT + 10000))"
  else
    echo "$S3_PORT"
  fi
}

write_seaweedfs_config() {
  # Static identity: one key with full access (Admin includes bucket create/delete).
  cat >"$S3_CONFIG.tmp" <<EOF
{
  "identities": [
    {
      "name": "streamflow",
      "credentials": [{"accessKey": "$S3_ACCESS_KEY", "secretKey": "$S3_SECRET_KEY"}],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    }
  ]
}
EOF
  mv -f "$S3_CONFIG.tmp" "$S3_CONFIG"
}

launch() {
  local -a cmd
  case "$S3_IMPL" in
    seaweedfs)
      write_seaweedfs_config
      cmd=("$BIN" -logtostderr server
        -ip=127.0.0.1 -ip.bind=127.0.0.1
        -dir="$DATA"
        -master.port="$S3_MASTER_PORT"
        -master.volumeSizeLimitMB=128
        -master.telemetry=false -master.telemetry.url=http://127.0.0.1:1/
        -master.electionTimeout=1s
        -volume.port="$S3_VOLUME_PORT" -volume.max=0 -volume.preStopSeconds=0
        -filer.port="$S3_FILER_PORT"
        -s3 -s3.port="$S3_PORT" -s3.config="$S3_CONFIG"
        -s3.port.iceberg=0 -s3.port.lance=0)
      ;;
    s3s-fs)
      cmd=("$BIN" --host 127.0.0.1 --port "$S3_PORT"
        --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" "$DATA")
      ;;
  esac
  mkdir -p "$DATA"
  touch "$LOG"
  if (($(stat -c %s "$LOG") > 50 * 1024 * 1024)); then mv -f "$LOG" "$LOG.1" && touch "$LOG"; fi
  LOG_OFFSET=$(($(stat -c %s "$LOG") + 1))   # startup_failed shows only this run's lines
  echo "===== $(date -u +%FT%TZ) starting: ${cmd[*]}" >>"$LOG"
  # Grow one volume per collection at a time (each bucket is a collection); the default of 7
  # pre-grown volumes per bucket wastes slots on a small dev box.
  # setsid: own session, so a Ctrl-C aimed at a later foreground command does not hit it.
  # (When the caller is not a process-group leader — always the case for `&` in a script —
  # setsid execs in place, so $! is the server's pid.)
  # `exec 9>&-`: do not let the server inherit (and so hold) our lock.
  (
    exec 9>&-
    cd "$RUN"
    WEED_MASTER_VOLUME_GROWTH_COPY_1=1 exec setsid "${cmd[@]}" >>"$LOG" 2>&1 </dev/null
  ) &
  LAUNCHED_PID=$!
  echo "$LAUNCHED_PID" >"$PIDFILE"
  echo "$BIN" >"$IMPLFILE"
}

startup_failed() {
  log "ERROR: $1; last lines of $LOG:"
  tail -c "+${LOG_OFFSET:-1}" "$LOG" | tail -n 60 >&2 || true
  stop_pidfile "$PIDFILE" 5 "$BIN" || true
  rm -f "$IMPLFILE"
  exit 1
}

cmd_start() {
  command -v python3 >/dev/null || die "python3 is required (bucket creation / health check)"
  cmd_install
  take_lock
  local pid port
  if pid="$(running_pid)"; then
    if s3py wait 10 2>/dev/null; then
      log "already running (pid $pid, $(cat "$IMPLFILE" 2>/dev/null)) at http://$S3_HOST:$S3_PORT"
      s3py ready "${BUCKETS[@]}" >/dev/null || die "bucket creation / write probe failed"
      return 0
    fi
    die "pid $pid is running but S3 at http://$S3_HOST:$S3_PORT does not answer; see $LOG (try: $0 stop)"
  fi
  [[ -f "$PIDFILE" ]] && { log "removing stale pid file $PIDFILE"; rm -f "$PIDFILE"; }
  for port in $(server_ports); do
    if tcp_open "$S3_HOST" "$port"; then
      die "port $port on $S3_HOST is already in use by another process (S3_PORT=$S3_PORT; see the S3_*_PORT variables)"
    fi
  done
  launch
  pid=$LAUNCHED_PID
  log "started $S3_IMPL (pid $pid), log $LOG; waiting up to ${S3_START_TIMEOUT}s for S3"
  local deadline=$((SECONDS + S3_START_TIMEOUT))
  until s3py ping 2>/dev/null; do
    pid_alive "$pid" || startup_failed "server exited during startup"
    ((SECONDS < deadline)) || startup_failed "S3 did not answer within ${S3_START_TIMEOUT}s"
    sleep 0.5
  done
  # The S3 gateway answers before the filer's lock ring / volumes can take writes (the first
  # write then stalls ~5-10s): create the buckets, then wait until a write probe succeeds.
  s3py ready "${BUCKETS[@]}" || startup_failed "could not create buckets ($S3_BUCKETS) or write to them"
  log "ready: http://$S3_HOST:$S3_PORT (access key $S3_ACCESS_KEY), buckets: $S3_BUCKETS"
}

cmd_stop() {
  local timeout="${1:-$S3_STOP_TIMEOUT}"
  take_lock
  if ! running_pid >/dev/null; then
    if [[ -f "$PIDFILE" ]]; then log "removing stale pid file $PIDFILE"; fi
    rm -f "$PIDFILE" "$IMPLFILE"
    log "not running"
    return 0
  fi
  local bin
  bin="$(cat "$IMPLFILE" 2>/dev/null || true)"
  # SIGTERM = graceful. With writes in the last minute, `weed server` takes ~15s to exit: it
  # stops its volume server before the filer, whose final metadata-log flush then retries
  # until a hard-coded 15s budget runs out (that log is the change feed; objects are safe).
  stop_pidfile "$PIDFILE" "$timeout" "${bin:-$BIN_DIR/}" || die "could not stop the server (pid file $PIDFILE)"
  rm -f "$IMPLFILE"
  log "stopped"
}

cmd_status() {
  local pid
  if pid="$(running_pid)"; then
    if s3py ping 2>/dev/null; then
      echo "running: pid $pid, $(cat "$IMPLFILE"), http://$S3_HOST:$S3_PORT, data $DATA"
      return 0
    fi
    echo "starting or unhealthy: pid $pid, http://$S3_HOST:$S3_PORT not answering; log $LOG"
    return 1
  fi
  echo "stopped (data: $DATA)"
  return 3
}

cmd_reset() {
  # The data is wiped anyway: no need to sit through SeaweedFS's slow graceful shutdown.
  cmd_stop 3
  take_lock
  log "wiping data in $RUN"
  rm -rf "$RUN/data" "$RUN/data-s3s-fs" "$S3_CONFIG" "$LOG"
}

main() {
  local sub="${1:-}"
  case "$sub" in
    install) cmd_install ;;
    binary) cmd_install >&2 && echo "$BIN" ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    env) print_env ;;
    smoke) s3py smoke "${2:-landing}" ;;
    mkbucket) shift; s3py mkbucket "$@" ;;
    rmbucket) shift; s3py rmbucket "$@" ;;
    logs) tail -n "${2:-100}" "$LOG" ;;
    freeze | thaw)
      local pid
      pid="$(running_pid)" || die "not running (nothing started by this script)"
      kill "-$([[ "$sub" == freeze ]] && echo STOP || echo CONT)" "$pid" ;;
    *)
      sed -n '2,16p' "$0" >&2
      exit 2
      ;;
  esac
}

main "$@"
