#!/usr/bin/env bash
# A real Kubernetes control plane for integration tests of the operator: kube-apiserver
# backed by a real single-member etcd, both on 127.0.0.1, plus the matching kubectl.
# There is NO kubelet, scheduler or controller-manager: objects are stored, validated
# (OpenAPI, CEL, admission, RBAC) and watched, but nothing runs them (a Job stays without
# Pods, a deleted Namespace stays Terminating, no garbage collection of dependents).
# The binaries are built from source with the Go toolchain (Go module proxy only).
#
# Usage: scripts/kube.sh <command> [args]
#   install            build etcd, kube-apiserver and kubectl into the cache if missing
#                      (cold build: ~15-25 min on 2 cores; then instant)
#   start              install if needed, generate the PKI if needed, start etcd and the
#                      API server in the background, wait until /readyz is ok and the
#                      "default" namespace exists (no-op if already running)
#   stop               stop the API server, then etcd (only the processes this script
#                      started, via pid files; stale pid files are fine)
#   restart            stop + start
#   status             print state; exit 0 if both processes run, 3 if not
#   reset              stop and wipe the etcd data and logs (PKI and kubeconfig are kept)
#   env                print `export KUBECONFIG=...` (use: eval "$(scripts/kube.sh env)")
#   kubeconfig         print the kubeconfig path
#   server             print the API server URL
#   kubectl [args...]  run the cached kubectl against this API server
#   logs [etcd|apiserver] [N]   last N (default 100) lines of a log (default apiserver)
#
# Environment:
#   KUBE_VERSION (v1.37.2)   ETCD_VERSION (v3.7.3)
#   KUBE_API_PORT (6443)   KUBE_ETCD_PORT (2379)   KUBE_ETCD_PEER_PORT (2380)
#   KUBE_START_TIMEOUT (180 s)   KUBE_STOP_TIMEOUT (60 s)   KUBE_BUILD_JOBS (2, go build -p)
#   KUBE_ETCD_UNSAFE_NO_FSYNC (true: etcd --unsafe-no-fsync, faster tests, data survives
#     a process restart but not a machine crash)
#   KUBE_MODE (harness): "cluster" serves a cluster with a node instead (scripts/cluster.sh sets
#     it with the variables below): the API server listens on KUBE_HOST, pods get
#     ServiceAccount tokens, the "kubernetes" Service gets endpoints, nodes are authorised by
#     the Node authorizer, and the PKI has client certificates for the node's components
#   KUBE_HOST (127.0.0.1)   KUBE_SERVICE_CIDR (10.0.0.0/24)   KUBE_SERVICE_IP (10.0.0.1)
#   KUBE_APISERVER_VERBOSITY (1)   KUBE_APISERVER_EXTRA_ARGS (appended, split on spaces;
#     later flags win, e.g. "--feature-gates=Foo=true --runtime-config=api/all=true")
#   STREAMFLOW_CACHE (~/.cache/streamflow): binaries in $STREAMFLOW_CACHE/bin
#     (kube-apiserver-<v>, kubectl-<v>, etcd-<v>), Go caches in $STREAMFLOW_CACHE/go
#   STREAMFLOW_RUN_DIR ($STREAMFLOW_CACHE/run): state in $STREAMFLOW_RUN_DIR/kube
#     (etcd/ data, pki/, kubeconfig, logs/, *.pid)
# Needs: go >= 1.26 (to build), openssl, curl, flock (installed with apt-get if missing
# and running as root).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"
SF_LOG_TAG=kube

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-v3.7.3}"
KUBE_MODE="${KUBE_MODE:-harness}"
KUBE_HOST="${KUBE_HOST:-127.0.0.1}"
# etcd is only ever the API server's: it stays on loopback.
KUBE_ETCD_HOST="127.0.0.1"
KUBE_API_PORT="${KUBE_API_PORT:-6443}"
KUBE_ETCD_PORT="${KUBE_ETCD_PORT:-2379}"
KUBE_ETCD_PEER_PORT="${KUBE_ETCD_PEER_PORT:-2380}"
KUBE_START_TIMEOUT="${KUBE_START_TIMEOUT:-180}"
KUBE_STOP_TIMEOUT="${KUBE_STOP_TIMEOUT:-60}"
KUBE_BUILD_JOBS="${KUBE_BUILD_JOBS:-2}"
KUBE_ETCD_UNSAFE_NO_FSYNC="${KUBE_ETCD_UNSAFE_NO_FSYNC:-true}"
KUBE_APISERVER_VERBOSITY="${KUBE_APISERVER_VERBOSITY:-1}"
KUBE_APISERVER_EXTRA_ARGS="${KUBE_APISERVER_EXTRA_ARGS:-}"
# In the harness only a config value for the "kubernetes" Service's ClusterIP: no traffic
# goes there.
KUBE_SERVICE_CIDR="${KUBE_SERVICE_CIDR:-10.0.0.0/24}"
KUBE_SERVICE_IP="${KUBE_SERVICE_IP:-10.0.0.1}"
[[ "$KUBE_MODE" == harness || "$KUBE_MODE" == cluster ]] || die "KUBE_MODE must be harness or cluster, got '$KUBE_MODE'"

[[ "$KUBE_VERSION" =~ ^v1\.([0-9]+)\.([0-9]+)$ ]] || die "KUBE_VERSION must look like v1.37.2, got '$KUBE_VERSION'"
KUBE_MINOR="${BASH_REMATCH[1]}"
# Staging modules (k8s.io/api, k8s.io/apiserver, ...) are published as v0.<minor>.<patch>.
KUBE_STAGING_VERSION="v0.${BASH_REMATCH[1]}.${BASH_REMATCH[2]}"
[[ "$ETCD_VERSION" =~ ^v3\.[0-9]+\.[0-9]+$ ]] || die "ETCD_VERSION must look like v3.7.3, got '$ETCD_VERSION'"
for _p in KUBE_API_PORT KUBE_ETCD_PORT KUBE_ETCD_PEER_PORT KUBE_START_TIMEOUT KUBE_STOP_TIMEOUT KUBE_BUILD_JOBS; do
  [[ "${!_p}" =~ ^[0-9]+$ ]] || die "$_p must be a number, got '${!_p}'"
done
[[ "$KUBE_API_PORT" != "$KUBE_ETCD_PORT" && "$KUBE_API_PORT" != "$KUBE_ETCD_PEER_PORT" &&
  "$KUBE_ETCD_PORT" != "$KUBE_ETCD_PEER_PORT" ]] || die "KUBE_API_PORT, KUBE_ETCD_PORT and KUBE_ETCD_PEER_PORT must differ"

CACHE="$(sf_cache_dir)"
BIN_DIR="$CACHE/bin"
BUILD_ROOT="$CACHE/kube/build"
APISERVER_BIN="$BIN_DIR/kube-apiserver-$KUBE_VERSION"
KUBECTL_BIN="$BIN_DIR/kubectl-$KUBE_VERSION"
ETCD_BIN="$BIN_DIR/etcd-$ETCD_VERSION"
# Built together in one `go build` (they share most packages): the API server harness uses the
# first two, scripts/cluster.sh's node all of them.
KUBE_COMMANDS=(kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy)

RUN_DIR="$(sf_run_dir kube)"
PKI_DIR="$RUN_DIR/pki"
ETCD_DATA="$RUN_DIR/etcd"
LOG_DIR="$RUN_DIR/logs"
ETCD_LOG="$LOG_DIR/etcd.log"
APISERVER_LOG="$LOG_DIR/kube-apiserver.log"
ETCD_PID_FILE="$RUN_DIR/etcd.pid"
APISERVER_PID_FILE="$RUN_DIR/kube-apiserver.pid"
KUBECONFIG_FILE="$RUN_DIR/kubeconfig"
API_URL="https://$KUBE_HOST:$KUBE_API_PORT"
ETCD_URL="http://$KUBE_ETCD_HOST:$KUBE_ETCD_PORT"
# Strings that only the command lines of the processes started for this run dir contain
# (pidfile_pid checks them, so a recycled pid is never taken for ours).
ETCD_MATCH="--data-dir=$ETCD_DATA"
APISERVER_MATCH="--tls-cert-file=$PKI_DIR/apiserver.crt"

# ---------------------------------------------------------------- prerequisites

# Installs Debian packages for missing commands (as root with apt-get), else dies.
ensure_cmds() {
  local missing=() c pkg
  for c in "$@"; do
    command -v "$c" >/dev/null 2>&1 && continue
    case "$c" in
      flock) pkg=util-linux ;;
      *) pkg="$c" ;;
    esac
    missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  if [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    log "installing missing packages: ${missing[*]}"
    apt-get update -qq >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 ||
      die "apt-get install ${missing[*]} failed"
  else
    die "missing commands (install the packages: ${missing[*]})"
  fi
}

ensure_go() {
  command -v go >/dev/null 2>&1 ||
    die "go not found: building etcd/kube-apiserver/kubectl needs Go >= 1.26 (Debian 12's golang-go is too old)"
  local v
  v="$(go env GOVERSION 2>/dev/null)" || die "'go env' failed"
  if [[ "$v" =~ ^go1\.([0-9]+) ]] && ((BASH_REMATCH[1] < 21)); then
    die "$v is too old to build Kubernetes $KUBE_VERSION (need Go >= 1.26)"
  fi
}

# Go environment for the builds: caches under $STREAMFLOW_CACHE/go (same layout and flags
# as scripts/s3.sh, so CI reuses them), static binaries, no VCS stamping.
go_env() {
  export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build"
  export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath" GOWORK=off GO111MODULE=on
}

# Writes $2 to file $1 only if the content differs (atomic replace).
write_file() {
  local f="$1" content="$2"
  if [[ -f "$f" ]] && [[ "$(cat "$f")" == "$content" ]]; then return 0; fi
  mkdir -p "$(dirname "$f")"
  printf '%s\n' "$content" >"$f.tmp.$$"
  mv -f "$f.tmp.$$" "$f"
}

# ---------------------------------------------------------------- install (build from source)

# `go install k8s.io/kubernetes/cmd/...@v` and `go install go.etcd.io/etcd/server/v3@v` are
# refused because those modules' go.mod files have replace directives. So each is built
# from a small generated module (in $BUILD_ROOT) that requires it and repeats its
# replaces with published versions: k8s.io/<staging> => k8s.io/<staging> v0.<minor>.<patch>.

build_etcd() {
  local dir="$BUILD_ROOT/etcd-$ETCD_VERSION" started=$SECONDS
  mkdir -p "$dir"
  write_file "$dir/go.mod" "// Generated by streamflow scripts/kube.sh: builds the etcd $ETCD_VERSION server binary.
module streamflow.local/etcd-build

go 1.26.0

require go.etcd.io/etcd/server/v3 $ETCD_VERSION

// The root package of go.etcd.io/etcd/server/v3 is etcd's main (etcdmain.Main(os.Args)).
tool go.etcd.io/etcd/server/v3"
  log "building etcd $ETCD_VERSION (log: $dir/build.log)"
  if ! (cd "$dir" && go mod tidy && go build -p "$KUBE_BUILD_JOBS" -ldflags "-s -w" \
    -o "$ETCD_BIN.tmp" go.etcd.io/etcd/server/v3) >"$dir/build.log" 2>&1; then
    tail -n 40 "$dir/build.log" >&2
    rm -f "$ETCD_BIN.tmp"
    die "building etcd $ETCD_VERSION failed (full log: $dir/build.log)"
  fi
  "$ETCD_BIN.tmp" --version >/dev/null || die "the built etcd binary does not run"
  mv -f "$ETCD_BIN.tmp" "$ETCD_BIN"
  log "built $ETCD_BIN ($(du -h "$ETCD_BIN" | cut -f1)) in $((SECONDS - started))s"
}

# build_kube NAME... : builds the given commands of k8s.io/kubernetes/cmd (kube-apiserver,
# kubectl) in one go build (they share most packages).
build_kube() {
  local dir="$BUILD_ROOT/kubernetes-$KUBE_VERSION" started=$SECONDS json gomod info staging m
  mkdir -p "$dir"
  log "resolving k8s.io/kubernetes@$KUBE_VERSION"
  json="$(cd "$BUILD_ROOT" && go mod download -json "k8s.io/kubernetes@$KUBE_VERSION")" ||
    die "go mod download k8s.io/kubernetes@$KUBE_VERSION failed: $json"
  gomod="$(sed -n 's/^[[:space:]]*"GoMod": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
  info="$(sed -n 's/^[[:space:]]*"Info": "\(.*\)",\{0,1\}$/\1/p' <<<"$json")"
  [[ -f "$gomod" ]] || die "no go.mod for k8s.io/kubernetes@$KUBE_VERSION in: $json"
  # Every "k8s.io/x => ./staging/src/k8s.io/x" replace of kubernetes' own go.mod.
  staging="$(sed -n 's#^[[:space:]]*\(replace[[:space:]]\{1,\}\)\{0,1\}\(k8s\.io/[^[:space:]]*\)[[:space:]]*=>[[:space:]]*\./staging/.*#\2#p' "$gomod" | sort -u)"
  [[ -n "$staging" ]] || die "found no staging replaces in $gomod"
  local replaces=""
  for m in $staging; do replaces+=$'\t'"$m => $m $KUBE_STAGING_VERSION"$'\n'; done
  local cmds=() pkgs=() c
  for c in "$@"; do cmds+=("$c"); pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  write_file "$dir/go.mod" "// Generated by streamflow scripts/kube.sh: builds Kubernetes $KUBE_VERSION's commands.
module streamflow.local/kubernetes-build

go 1.26.0

require k8s.io/kubernetes $KUBE_VERSION

tool (
$(printf '\tk8s.io/kubernetes/cmd/%s\n' "${KUBE_COMMANDS[@]}")
)

// k8s.io/kubernetes replaces its staging modules with ./staging/src/...; use the
// published copies of the same release instead.
replace (
${replaces%$'\n'}
)"
  # Version stamping as in kubernetes' hack/lib/version.sh (kubectl version, /version).
  local build_date ldflags="-s -w" p
  build_date="$(sed -n 's/.*"Time":"\([^"]*\)".*/\1/p' "$info" 2>/dev/null)"
  [[ -n "$build_date" ]] || build_date="1970-01-01T00:00:00Z"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $p.gitVersion=$KUBE_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$KUBE_MINOR"
    ldflags+=" -X $p.gitTreeState=clean -X $p.buildDate=$build_date"
  done
  log "building ${cmds[*]} $KUBE_VERSION (log: $dir/build.log; a cold build takes a while)"
  rm -rf "$dir/out"
  mkdir -p "$dir/out"
  if ! (cd "$dir" && go mod tidy && go build -p "$KUBE_BUILD_JOBS" -ldflags "$ldflags" \
    -o "$dir/out/" "${pkgs[@]}") >"$dir/build.log" 2>&1; then
    tail -n 40 "$dir/build.log" >&2
    die "building ${cmds[*]} $KUBE_VERSION failed (full log: $dir/build.log)"
  fi
  for c in "${cmds[@]}"; do
    "$dir/out/$c" --version >/dev/null 2>&1 || "$dir/out/$c" version --client >/dev/null ||
      die "the built $c binary does not run"
    mv -f "$dir/out/$c" "$BIN_DIR/$c-$KUBE_VERSION"
    log "built $BIN_DIR/$c-$KUBE_VERSION ($(du -h "$BIN_DIR/$c-$KUBE_VERSION" | cut -f1))"
  done
  rmdir "$dir/out" 2>/dev/null || true
  log "built ${cmds[*]} in $((SECONDS - started))s"
}

is_installed() {
  local c
  [[ -x "$ETCD_BIN" ]] || return 1
  for c in "${KUBE_COMMANDS[@]}"; do [[ -x "$BIN_DIR/$c-$KUBE_VERSION" ]] || return 1; done
}

# install [kubectl-only] : builds what is missing; serialised by a lock in the cache.
cmd_install() {
  local only_kubectl="${1:-}"
  if [[ -n "$only_kubectl" ]]; then [[ -x "$KUBECTL_BIN" ]] && return 0
  elif is_installed; then
    log "etcd $ETCD_VERSION and Kubernetes $KUBE_VERSION (${KUBE_COMMANDS[*]}) already installed in $BIN_DIR"
    return 0
  fi
  ensure_cmds flock
  ensure_go
  mkdir -p "$BIN_DIR" "$BUILD_ROOT"
  exec 8>"$BUILD_ROOT/.install.lock"
  flock -w 3600 8 || die "timed out waiting for another install (lock $BUILD_ROOT/.install.lock)"
  go_env
  local started=$SECONDS kube=()
  if [[ -z "$only_kubectl" && ! -x "$ETCD_BIN" ]]; then build_etcd; fi
  local c
  for c in "${KUBE_COMMANDS[@]}"; do
    [[ -n "$only_kubectl" && "$c" != kubectl ]] && continue
    [[ -x "$BIN_DIR/$c-$KUBE_VERSION" ]] || kube+=("$c")
  done
  if ((${#kube[@]} > 0)); then build_kube "${kube[@]}"; fi
  exec 8>&-
  log "install done in $((SECONDS - started))s"
}

# ---------------------------------------------------------------- PKI and kubeconfig

# Client certificates of a cluster's components (KUBE_MODE=cluster): file name → subject. Each
# identity is one that Kubernetes' bootstrap RBAC roles (or the Node authorizer) already know.
declare -A COMPONENT_SUBJECTS=()
if [[ "$KUBE_MODE" == cluster ]]; then
  COMPONENT_SUBJECTS=(
    [kubelet]="/O=system:nodes/CN=system:node:${KUBE_NODE_NAME:?KUBE_NODE_NAME is needed in cluster mode}"
    [controller-manager]="/CN=system:kube-controller-manager"
    [scheduler]="/CN=system:kube-scheduler"
    [kube-proxy]="/CN=system:kube-proxy"
  )
fi

pki_valid() {
  local f
  for f in ca.crt ca.key apiserver.crt apiserver.key admin.crt admin.key sa.key sa.pub; do
    [[ -s "$PKI_DIR/$f" ]] || return 1
  done
  # The serving certificate must name the address the API server listens on.
  openssl x509 -noout -ext subjectAltName -in "$PKI_DIR/apiserver.crt" 2>/dev/null |
    grep -q "IP Address:$KUBE_HOST\b" || return 1
  for f in "${!COMPONENT_SUBJECTS[@]}"; do
    openssl x509 -noout -checkend 86400 -in "$PKI_DIR/$f.crt" >/dev/null 2>&1 || return 1
  done
  for f in ca apiserver admin; do
    openssl x509 -noout -checkend 86400 -in "$PKI_DIR/$f.crt" >/dev/null 2>&1 || return 1
  done
}

# Self-signed CA; serving cert for 127.0.0.1/localhost/kubernetes.default.svc; admin client
# cert (O=system:masters: cluster-admin, not subject to RBAC); service-account key pair.
gen_pki() {
  pki_valid && return 0
  log "generating the PKI in $PKI_DIR"
  rm -rf "$PKI_DIR.tmp"
  mkdir -p "$PKI_DIR.tmp"
  chmod 700 "$PKI_DIR.tmp"
  (
    set -e
    umask 077
    cd "$PKI_DIR.tmp"
    cat >openssl.cnf <<EOF
# Generated by streamflow scripts/kube.sh
[req]
distinguished_name = dn
prompt = no
[dn]
CN = unused
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign,digitalSignature
subjectKeyIdentifier = hash
[v3_server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:$KUBE_HOST,IP:$KUBE_SERVICE_IP
[v3_client]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
    openssl genrsa -out ca.key 2048 2>/dev/null
    openssl req -x509 -new -config openssl.cnf -extensions v3_ca -key ca.key -sha256 -days 3650 \
      -subj "/CN=streamflow-kube-ca" -out ca.crt
    sign() { # sign NAME SUBJECT EXTENSIONS
      openssl genrsa -out "$1.key" 2048 2>/dev/null
      openssl req -new -config openssl.cnf -key "$1.key" -subj "$2" -out "$1.csr"
      openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -set_serial "0x$(openssl rand -hex 16)" \
        -sha256 -days 3650 -extfile openssl.cnf -extensions "$3" -out "$1.crt" 2>/dev/null
      rm -f "$1.csr"
    }
    sign apiserver "/CN=kube-apiserver" v3_server
    sign admin "/O=system:masters/CN=streamflow-admin" v3_client
    for c in "${!COMPONENT_SUBJECTS[@]}"; do sign "$c" "${COMPONENT_SUBJECTS[$c]}" v3_client; done
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  ) || { rm -rf "$PKI_DIR.tmp"; die "generating the PKI with openssl failed"; }
  rm -rf "$PKI_DIR"
  mv "$PKI_DIR.tmp" "$PKI_DIR"
}

# write_kubeconfig FILE CERT : a kubeconfig for the client certificate $PKI_DIR/CERT.crt.
write_kubeconfig() {
  local file="$1" cert="$2" ca crt key
  ca="$(base64 -w0 <"$PKI_DIR/ca.crt")"
  crt="$(base64 -w0 <"$PKI_DIR/$cert.crt")"
  key="$(base64 -w0 <"$PKI_DIR/$cert.key")"
  (
    umask 077
    write_file "$file" "# Generated by streamflow scripts/kube.sh on every start; edits are overwritten.
apiVersion: v1
kind: Config
clusters:
- name: streamflow
  cluster:
    server: $API_URL
    certificate-authority-data: $ca
users:
- name: $cert
  user:
    client-certificate-data: $crt
    client-key-data: $key
contexts:
- name: streamflow
  context:
    cluster: streamflow
    user: $cert
    namespace: default
current-context: streamflow"
  )
}

# The admin's kubeconfig, and in cluster mode one per component (<component>.kubeconfig).
write_kubeconfigs() {
  local c
  write_kubeconfig "$KUBECONFIG_FILE" admin
  for c in "${!COMPONENT_SUBJECTS[@]}"; do write_kubeconfig "$RUN_DIR/$c.kubeconfig" "$c"; done
}

# ---------------------------------------------------------------- processes

etcd_pid() { pidfile_pid "$ETCD_PID_FILE" "$ETCD_MATCH"; }
apiserver_pid() { pidfile_pid "$APISERVER_PID_FILE" "$APISERVER_MATCH"; }

etcd_healthy() {
  curl -fsS --noproxy '*' --max-time 3 "$ETCD_URL/health" 2>/dev/null | grep -q '"health":"true"'
}

# api_get PATH : GET on the API server as the admin; prints the body, fails on non-2xx.
api_get() {
  curl -fsS --noproxy '*' --max-time 5 --cacert "$PKI_DIR/ca.crt" \
    --cert "$PKI_DIR/admin.crt" --key "$PKI_DIR/admin.key" "$API_URL$1" 2>/dev/null
}

apiserver_ready() {
  [[ "$(api_get /readyz)" == ok ]] && api_get /api/v1/namespaces/default >/dev/null
}

print_log_tail() {
  local f="$1"
  if [[ -f "$f" ]]; then
    log "last lines of $f:"
    tail -n 40 "$f" >&2
  fi
}

# ensure_port_free PORT WHAT [HOST] : dies when something listens on HOST (KUBE_HOST):PORT.
ensure_port_free() {
  local port="$1" what="$2" host="${3:-$KUBE_HOST}"
  if tcp_open "$host" "$port"; then
    die "port $host:$port ($what) is already in use by a process this script did not start"
  fi
}

start_etcd() {
  local pid deadline
  if pid="$(etcd_pid)"; then
    log "etcd already running (pid $pid)"
  else
    ensure_port_free "$KUBE_ETCD_PORT" "etcd client, KUBE_ETCD_PORT" "$KUBE_ETCD_HOST"
    ensure_port_free "$KUBE_ETCD_PEER_PORT" "etcd peer, KUBE_ETCD_PEER_PORT" "$KUBE_ETCD_HOST"
    mkdir -p "$ETCD_DATA" "$LOG_DIR"
    chmod 700 "$ETCD_DATA"
    local args=(
      --name=streamflow
      --data-dir="$ETCD_DATA"
      --listen-client-urls="$ETCD_URL"
      --advertise-client-urls="$ETCD_URL"
      --listen-peer-urls="http://$KUBE_ETCD_HOST:$KUBE_ETCD_PEER_PORT"
      --initial-advertise-peer-urls="http://$KUBE_ETCD_HOST:$KUBE_ETCD_PEER_PORT"
      --initial-cluster="streamflow=http://$KUBE_ETCD_HOST:$KUBE_ETCD_PEER_PORT"
      --initial-cluster-state=new
      --initial-cluster-token=streamflow-kube
      --log-outputs=stderr
    )
    [[ "$KUBE_ETCD_UNSAFE_NO_FSYNC" == true ]] && args+=(--unsafe-no-fsync)
    log "starting etcd $ETCD_VERSION on $ETCD_URL (data $ETCD_DATA, log $ETCD_LOG)"
    pid="$(sf_launch "$ETCD_PID_FILE" "$ETCD_LOG" "$ETCD_BIN" "${args[@]}")"
  fi
  deadline=$((SECONDS + KUBE_START_TIMEOUT))
  until etcd_healthy; do
    if ! pid_alive "$pid"; then
      print_log_tail "$ETCD_LOG"
      rm -f "$ETCD_PID_FILE"
      die "etcd exited during startup"
    fi
    if ((SECONDS >= deadline)); then
      print_log_tail "$ETCD_LOG"
      stop_pidfile "$ETCD_PID_FILE" 20 "$ETCD_MATCH" || true
      die "etcd did not become healthy on $ETCD_URL within ${KUBE_START_TIMEOUT}s"
    fi
    sleep 0.3
  done
}

start_apiserver() {
  local pid
  if pid="$(apiserver_pid)"; then
    log "kube-apiserver already running (pid $pid)"
    return 0
  fi
  ensure_port_free "$KUBE_API_PORT" "kube-apiserver, KUBE_API_PORT"
  mkdir -p "$LOG_DIR"
  local args=(
    --bind-address="$KUBE_HOST"
    --advertise-address="$KUBE_HOST"
    --secure-port="$KUBE_API_PORT"
    --etcd-servers="$ETCD_URL"
    --tls-cert-file="$PKI_DIR/apiserver.crt"
    --tls-private-key-file="$PKI_DIR/apiserver.key"
    --cert-dir="$PKI_DIR/generated"
    --client-ca-file="$PKI_DIR/ca.crt"
    --service-account-issuer=https://kubernetes.default.svc.cluster.local
    --service-account-key-file="$PKI_DIR/sa.pub"
    --service-account-signing-key-file="$PKI_DIR/sa.key"
    --service-cluster-ip-range="$KUBE_SERVICE_CIDR"
    --allow-privileged=true
    --profiling=false
    --v="$KUBE_APISERVER_VERBOSITY"
  )
  if [[ "$KUBE_MODE" == cluster ]]; then
    args+=(
      # A kubelet may only touch its own Node and its pods (as on kind and kubeadm clusters).
      --authorization-mode=Node,RBAC
      --enable-admission-plugins=NodeRestriction
      # logs, exec and port-forward: the API server calls the kubelet as the admin.
      --kubelet-client-certificate="$PKI_DIR/admin.crt"
      --kubelet-client-key="$PKI_DIR/admin.key"
      --kubelet-preferred-address-types=InternalIP
    )
  else
    args+=(
      --authorization-mode=RBAC
      # Pods would need each namespace's "default" ServiceAccount, which only the missing
      # controller-manager creates (as envtest does).
      --disable-admission-plugins=ServiceAccount
      # The endpoint reconciler refuses a loopback advertise address ("may not be in the
      # loopback range"); the "kubernetes" Service then has no endpoints (kube's own test
      # server does the same).
      --endpoint-reconciler-type=none
    )
  fi
  # shellcheck disable=SC2206
  [[ -n "$KUBE_APISERVER_EXTRA_ARGS" ]] && args+=($KUBE_APISERVER_EXTRA_ARGS)
  log "starting kube-apiserver $KUBE_VERSION on $API_URL (log $APISERVER_LOG)"
  sf_launch "$APISERVER_PID_FILE" "$APISERVER_LOG" "$APISERVER_BIN" "${args[@]}" >/dev/null
}

wait_apiserver_ready() {
  local pid="$1" deadline=$((SECONDS + KUBE_START_TIMEOUT))
  until apiserver_ready; do
    if ! pid_alive "$pid"; then
      print_log_tail "$APISERVER_LOG"
      rm -f "$APISERVER_PID_FILE"
      return 1
    fi
    if ((SECONDS >= deadline)); then
      print_log_tail "$APISERVER_LOG"
      log "/readyz?verbose:"
      curl -sS --noproxy '*' --max-time 5 --cacert "$PKI_DIR/ca.crt" --cert "$PKI_DIR/admin.crt" \
        --key "$PKI_DIR/admin.key" "$API_URL/readyz?verbose" >&2 || true
      log "kube-apiserver not ready within ${KUBE_START_TIMEOUT}s"
      return 1
    fi
    sleep 0.5
  done
}

cmd_start() {
  ensure_cmds curl openssl flock
  exec 9>"$RUN_DIR/.lock"
  flock -w 300 9 || die "another start/stop is in progress (lock $RUN_DIR/.lock)"

  local pid
  if etcd_pid >/dev/null && pid="$(apiserver_pid)" && pki_valid && apiserver_ready; then
    log "already running (kube-apiserver pid $pid) on $API_URL"
    return 0
  fi
  cmd_install
  local started=$SECONDS
  if pid="$(apiserver_pid)" && ! etcd_pid >/dev/null; then
    log "kube-apiserver (pid $pid) runs without its etcd; restarting both"
    stop_apiserver
  fi
  # Check every port before starting anything, so a conflict leaves nothing behind.
  if ! etcd_pid >/dev/null; then
    ensure_port_free "$KUBE_ETCD_PORT" "etcd client, KUBE_ETCD_PORT" "$KUBE_ETCD_HOST"
    ensure_port_free "$KUBE_ETCD_PEER_PORT" "etcd peer, KUBE_ETCD_PEER_PORT" "$KUBE_ETCD_HOST"
  fi
  if ! apiserver_pid >/dev/null; then
    ensure_port_free "$KUBE_API_PORT" "kube-apiserver, KUBE_API_PORT"
    gen_pki
  fi
  write_kubeconfigs
  start_etcd
  start_apiserver
  pid="$(head -n1 "$APISERVER_PID_FILE" | tr -dc '0-9')"
  if ! wait_apiserver_ready "$pid"; then
    log "stopping what was started"
    stop_pidfile "$APISERVER_PID_FILE" 20 "$APISERVER_MATCH" || true
    stop_pidfile "$ETCD_PID_FILE" 20 "$ETCD_MATCH" || true
    die "kube-apiserver failed to start (logs: $LOG_DIR)"
  fi
  log "Kubernetes $KUBE_VERSION API server ready on $API_URL in $((SECONDS - started))s (etcd $ETCD_URL)"
  log "use: export KUBECONFIG=$KUBECONFIG_FILE   or: $0 kubectl ..."
}

# Without etcd the API server's graceful shutdown hangs (it retries its etcd writes)
# until SIGKILL, so it gets a short timeout then.
stop_apiserver() {
  local timeout="$KUBE_STOP_TIMEOUT"
  if ! etcd_pid >/dev/null && ((timeout > 10)); then timeout=10; fi
  stop_pidfile "$APISERVER_PID_FILE" "$timeout" "$APISERVER_MATCH" || die "could not stop kube-apiserver"
}

cmd_stop() {
  exec 9>"$RUN_DIR/.lock"
  flock -w 300 9 || die "another start/stop is in progress (lock $RUN_DIR/.lock)"
  local any=""
  apiserver_pid >/dev/null && any=1
  etcd_pid >/dev/null && any=1
  # API server first (it needs etcd to shut down cleanly), then etcd.
  stop_apiserver
  stop_pidfile "$ETCD_PID_FILE" "$KUBE_STOP_TIMEOUT" "$ETCD_MATCH" || die "could not stop etcd"
  if [[ -n "$any" ]]; then log "stopped"; else log "not running"; fi
}

cmd_status() {
  local epid apid rc=0 ready=""
  if epid="$(etcd_pid)"; then
    echo "etcd: running, pid $epid, $ETCD_URL ($(etcd_healthy && echo healthy || echo 'not healthy'))"
  else
    echo "etcd: stopped"
    rc=3
  fi
  if apid="$(apiserver_pid)"; then
    apiserver_ready && ready=ready
    echo "kube-apiserver: running, pid $apid, $API_URL (${ready:-not ready})"
  else
    echo "kube-apiserver: stopped"
    rc=3
  fi
  echo "versions: kube-apiserver/kubectl $KUBE_VERSION, etcd $ETCD_VERSION ($(is_installed && echo installed || echo 'not installed'))"
  echo "state: $RUN_DIR   kubeconfig: $KUBECONFIG_FILE"
  return "$rc"
}

cmd_reset() {
  cmd_stop
  log "wiping $ETCD_DATA and $LOG_DIR"
  rm -rf -- "$ETCD_DATA" "$LOG_DIR"
}

cmd_kubectl() {
  cmd_install kubectl-only
  KUBECONFIG="$KUBECONFIG_FILE" exec "$KUBECTL_BIN" "$@"
}

cmd_logs() {
  local which="apiserver" n=100
  case "${1:-}" in
    etcd | apiserver | kube-apiserver) which="$1"; shift ;;
  esac
  [[ -n "${1:-}" ]] && n="$1"
  case "$which" in
    etcd) tail -n "$n" "$ETCD_LOG" ;;
    *) tail -n "$n" "$APISERVER_LOG" ;;
  esac
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    install) cmd_install ;;
    start) cmd_start ;;
    stop) cmd_stop ;;
    restart) cmd_stop; cmd_start ;;
    status) cmd_status ;;
    reset) cmd_reset ;;
    env) printf 'export KUBECONFIG=%q\n' "$KUBECONFIG_FILE" ;;
    kubeconfig) printf '%s\n' "$KUBECONFIG_FILE" ;;
    server) printf '%s\n' "$API_URL" ;;
    kubectl) cmd_kubectl "$@" ;;
    logs) cmd_logs "$@" ;;
    -h | --help | help) sf_usage 0 ;;
    *) sf_usage 2 ;;
  esac
}

main "$@"
