#!/usr/bin/env bash
# A one-node Kubernetes cluster on this machine, without Docker: "kind without Docker". The
# control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler), a node
# (containerd 2 with runc, kubelet, kube-proxy in nftables mode, CNI bridge + host-local +
# loopback) and cluster DNS (CoreDNS, as a Deployment), all of one Kubernetes version, built
# from the Go module proxy and Debian's packages and cached; every image is built here (nothing
# is ever pulled). The node is named like kind's (streamflow-control-plane) and carries
# kind-config.yaml's labels, so the same manifests run on both.
#
# Usage: scripts/cluster.sh <command> [args]
#   install            build or install whatever is missing (cold: ~35 min on 2 cores)
#   up                 install if needed, start everything, wait until the node is Ready and
#                      cluster DNS answers (no-op if already up)
#   down               stop everything `up` started, remove every pod, mount, cgroup, network
#                      device, nftables table and path it made, put back the sysctls
#   status             print state; exit 0 if up, 3 if not
#   load ARCHIVE...    import docker-archive images (scripts/images.sh) into the node; the
#                      images they replace are removed
#   images             the node's image references (tags, and the CRI's sha256:<id> names)
#   kubectl [args...]  kubectl against this cluster (also: eval "$(scripts/cluster.sh env)")
#   env                print `export KUBECONFIG=... PATH=...`: kubectl of this cluster's version,
#                      talking to it
#   address            print the node's address (the bridge's: pods reach servers of the node there)
#   logs [COMPONENT] [N]   last N lines of a component's log (containerd, kubelet,
#                      kube-proxy, kube-controller-manager, kube-scheduler, apiserver, etcd)
#
# Network: the pod range (10.244.0.0/24) lives on a bridge of its own (sfbr0, 10.244.0.1, also
# the node's address) and the service range (10.96.0.0/16) only in kube-proxy's nftables
# table. IPv4 forwarding is turned on for pod-to-Service traffic, and an nftables table of this
# script drops anything forwarded into or out of the bridge from or to another interface: no
# pod can send a packet off this machine. Cluster DNS (10.96.0.10) answers cluster names only.
# NodePorts exist only on 10.244.0.1.
#
# Environment:
#   KUBE_VERSION (v1.37.2)   CONTAINERD_VERSION (v2.4.2)   COREDNS_VERSION (v1.15.0)
#   CLUSTER_API_PORT (6444)   CLUSTER_ETCD_PORT (2389, and +1 for its peer port)
#   CLUSTER_START_TIMEOUT (180 s)
#   STREAMFLOW_CACHE (~/.cache/streamflow): binaries in bin/, images in images/
#   STREAMFLOW_RUN_DIR ($STREAMFLOW_CACHE/run): state in $STREAMFLOW_RUN_DIR/cluster
# Needs: root (a node runs containers), Linux with cgroup v1 or v2, Go >= 1.26 to build.
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=scripts/lib.sh
source "$SCRIPT_DIR/lib.sh"
SF_LOG_TAG=cluster

KUBE_VERSION="${KUBE_VERSION:-v1.37.2}"
CONTAINERD_VERSION="${CONTAINERD_VERSION:-v2.4.2}"
COREDNS_VERSION="${COREDNS_VERSION:-v1.15.0}"
# The sandbox image the kubelet of this version expects (kubeadm's constants.PauseVersion).
PAUSE_VERSION="3.10.2"
PAUSE_IMAGE="registry.k8s.io/pause:$PAUSE_VERSION"
COREDNS_IMAGE="registry.k8s.io/coredns/coredns:$COREDNS_VERSION"
CLUSTER_API_PORT="${CLUSTER_API_PORT:-6444}"
CLUSTER_ETCD_PORT="${CLUSTER_ETCD_PORT:-2389}"
CLUSTER_START_TIMEOUT="${CLUSTER_START_TIMEOUT:-180}"

# kind's name for the node of kind-config.yaml's cluster, and that node's labels.
NODE_NAME="streamflow-control-plane"
node_labels() {
  python3 -c 'import sys, yaml
node = yaml.safe_load(open(sys.argv[1]))["nodes"][0]
print(",".join("%s=%s" % kv for kv in (node.get("labels") or {}).items()))' "$SCRIPT_DIR/../kind-config.yaml" ||
    die "cannot read the node labels of kind-config.yaml"
}
BRIDGE="sfbr0"
POD_CIDR="10.244.0.0/24"
NODE_IP="10.244.0.1"
SERVICE_CIDR="10.96.0.0/16"
API_SERVICE_IP="10.96.0.1"
DNS_SERVICE_IP="10.96.0.10"
NFT_TABLE="streamflow-node"

CACHE="$(sf_cache_dir)"
BIN_DIR="$CACHE/bin"
BUILD_ROOT="$CACHE/cluster/build"
IMAGE_DIR="$CACHE/images"
CONTAINERD_DIR="$BIN_DIR/containerd-$CONTAINERD_VERSION"
COREDNS_BIN="$BIN_DIR/coredns-$COREDNS_VERSION"
PAUSE_ARCHIVE="$IMAGE_DIR/pause-$PAUSE_VERSION.tar"
COREDNS_ARCHIVE="$IMAGE_DIR/coredns-$COREDNS_VERSION.tar"
KUBE_BIN() { printf '%s\n' "$BIN_DIR/$1-$KUBE_VERSION"; }
CNI_BIN_DIR="/usr/lib/cni"

export STREAMFLOW_RUN_DIR="${STREAMFLOW_RUN_DIR:-$CACHE/run}"
RUN_DIR="$(sf_run_dir cluster)"
LOG_DIR="$RUN_DIR/logs"
CTR_DIR="$RUN_DIR/containerd"
CTR_SOCK="$CTR_DIR/containerd.sock"
KUBELET_DIR="$RUN_DIR/kubelet"
CNI_CONF_DIR="$RUN_DIR/cni/net.d"
SAVED_SYSCTLS="$RUN_DIR/saved-sysctls"
SAVED_PATHS="$RUN_DIR/absent-paths"
CGROUP_FILE="$RUN_DIR/cgroup-root"
BRIDGE_FILE="$RUN_DIR/bridge-created"

# The control plane is scripts/kube.sh in cluster mode, with a store of its own (never the test
# harness's etcd, whose leftover Jobs a controller-manager would start running).
KUBE_ENV=(
  KUBE_MODE=cluster KUBE_HOST="$NODE_IP" KUBE_NODE_NAME="$NODE_NAME"
  KUBE_API_PORT="$CLUSTER_API_PORT" KUBE_ETCD_PORT="$CLUSTER_ETCD_PORT"
  KUBE_ETCD_PEER_PORT="$((CLUSTER_ETCD_PORT + 1))"
  KUBE_SERVICE_CIDR="$SERVICE_CIDR" KUBE_SERVICE_IP="$API_SERVICE_IP"
  STREAMFLOW_RUN_DIR="$RUN_DIR" KUBE_VERSION="$KUBE_VERSION"
)
kube_sh() { env "${KUBE_ENV[@]}" "$SCRIPT_DIR/kube.sh" "$@"; }
PKI_DIR="$RUN_DIR/kube/pki"
ADMIN_KUBECONFIG="$RUN_DIR/kube/kubeconfig"
component_kubeconfig() { printf '%s\n' "$RUN_DIR/kube/$1.kubeconfig"; }

# Sysctls the kubelet and kube-proxy set when they start (no option turns that off) and the
# forwarding this script turns on: saved before `up`, put back by `down`.
SYSCTLS=(
  net.ipv4.ip_forward vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.bridge.bridge-nf-call-iptables
  net.ipv4.conf.all.route_localnet
)
# Paths the kubelet, containerd or CNI create whatever their configuration says: those absent
# before `up` are removed by `down`.
HOST_PATHS=(
  /var/lib/kubelet /var/log/containers /var/log/pods /usr/libexec/kubernetes /run/containerd
  /var/lib/containerd /opt/containerd /var/lib/cni /run/netns /etc/cni /opt/cni
)

# ---------------------------------------------------------------- install

ensure_packages() {
  # command or file → Debian package
  local -A wanted=([runc]=runc [nft]=nftables [buildah]=buildah [ip]=iproute2 [flock]=util-linux
    [openssl]=openssl [curl]=curl ["$CNI_BIN_DIR/bridge"]=containernetworking-plugins
    [/usr/lib/x86_64-linux-gnu/libc.a]=libc6-dev [gcc]=gcc [mount]=mount [nsenter]=util-linux
    [sysctl]=procps [pgrep]=procps [python3]=python3)
  local missing=() c
  for c in "${!wanted[@]}"; do
    if [[ "$c" == /* ]]; then [[ -e "$c" ]] && continue
    else command -v "$c" >/dev/null 2>&1 && continue; fi
    missing+=("${wanted[$c]}")
  done
  ((${#missing[@]} == 0)) && return 0
  [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null || die "missing packages: ${missing[*]}"
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >&2 || die "apt-get update failed"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    $(printf '%s\n' "${missing[@]}" | sort -u) >&2 || die "apt-get install failed"
}

go_env() {
  export GOPATH="$CACHE/go" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build"
  export CGO_ENABLED=0 GOFLAGS="-buildvcs=false -trimpath" GOWORK=off GO111MODULE=on
}

# containerd, its runc shim and ctr. Static, without the btrfs snapshotter (it needs cgo).
build_containerd() {
  local out="$CONTAINERD_DIR.tmp" started=$SECONDS m="github.com/containerd/containerd/v2"
  log "building containerd $CONTAINERD_VERSION (log: $BUILD_ROOT/containerd.log)"
  rm -rf "$out"
  mkdir -p "$out" "$BUILD_ROOT"
  if ! GOBIN="$out" go install -tags "no_btrfs urfave_cli_no_docs" \
    -ldflags "-s -w -X $m/version.Version=$CONTAINERD_VERSION" \
    "$m/cmd/containerd@$CONTAINERD_VERSION" "$m/cmd/containerd-shim-runc-v2@$CONTAINERD_VERSION" \
    "$m/cmd/ctr@$CONTAINERD_VERSION" >"$BUILD_ROOT/containerd.log" 2>&1; then
    tail -n 30 "$BUILD_ROOT/containerd.log" >&2
    die "building containerd failed"
  fi
  "$out/containerd" --version >/dev/null || die "the built containerd does not run"
  rm -rf "$CONTAINERD_DIR"
  mv "$out" "$CONTAINERD_DIR"
  log "built containerd in $((SECONDS - started))s"
}

# CoreDNS from a module of its own (scripts/cluster/coredns/main.go: the plugins cluster DNS
# needs and no forwarding).
build_coredns() {
  local dir="$BUILD_ROOT/coredns-$COREDNS_VERSION" started=$SECONDS
  log "building CoreDNS $COREDNS_VERSION (log: $dir/build.log)"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$SCRIPT_DIR/cluster/coredns/main.go" "$dir/"
  cat >"$dir/go.mod" <<EOF
// Generated by streamflow scripts/cluster.sh: CoreDNS $COREDNS_VERSION with the plugins of main.go.
module streamflow.local/coredns-build

go 1.26.0

require github.com/coredns/coredns $COREDNS_VERSION
EOF
  if ! (cd "$dir" && go mod tidy && go build -ldflags "-s -w" -o "$COREDNS_BIN.tmp" .) >"$dir/build.log" 2>&1; then
    tail -n 30 "$dir/build.log" >&2
    die "building CoreDNS failed"
  fi
  "$COREDNS_BIN.tmp" -version >/dev/null || die "the built coredns does not run"
  mv -f "$COREDNS_BIN.tmp" "$COREDNS_BIN"
  log "built CoreDNS in $((SECONDS - started))s"
}

# build_image ARCHIVE NAME CONTEXT [buildah bud args...] : builds NAME and saves it as a
# docker-archive (what `load` imports).
build_image() {
  local archive="$1" name="$2" context="$3"
  shift 3
  mkdir -p "$IMAGE_DIR"
  sf_buildah bud --quiet --layers=false -t "$name" "$@" "$context" >/dev/null ||
    die "building the image $name failed"
  sf_image_save "$name" "$archive"
  sf_buildah_clean
}

# The sandbox image, from the pause.c and Dockerfile of the same Kubernetes release.
build_pause_image() {
  local src="$CACHE/go/mod/k8s.io/kubernetes@$KUBE_VERSION/build/pause" dir="$BUILD_ROOT/pause"
  [[ -f "$src/linux/pause.c" ]] || (cd "$BUILD_ROOT" && go mod download "k8s.io/kubernetes@$KUBE_VERSION") ||
    die "no k8s.io/kubernetes@$KUBE_VERSION sources"
  rm -rf "$dir"
  mkdir -p "$dir/bin"
  cp "$src/Dockerfile" "$dir/"
  # CFLAGS of build/pause/Makefile.
  gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION" -o "$dir/bin/pause-linux-amd64" \
    "$src/linux/pause.c" || die "compiling pause.c failed"
  build_image "$PAUSE_ARCHIVE" "$PAUSE_IMAGE" "$dir" --build-arg BASE=scratch --build-arg ARCH=amd64
}

build_coredns_image() {
  local dir="$BUILD_ROOT/coredns-image"
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$SCRIPT_DIR/cluster/coredns/Containerfile" "$COREDNS_BIN" "$dir/"
  mv "$dir/coredns-$COREDNS_VERSION" "$dir/coredns"
  build_image "$COREDNS_ARCHIVE" "$COREDNS_IMAGE" "$dir" -f "$dir/Containerfile"
}

is_installed() {
  local c
  for c in containerd containerd-shim-runc-v2 ctr; do [[ -x "$CONTAINERD_DIR/$c" ]] || return 1; done
  [[ -x "$COREDNS_BIN" && -s "$PAUSE_ARCHIVE" && -s "$COREDNS_ARCHIVE" ]] || return 1
  for c in kube-apiserver kubectl kube-controller-manager kube-scheduler kubelet kube-proxy; do
    [[ -x "$(KUBE_BIN "$c")" ]] || return 1
  done
}

cmd_install() {
  ensure_packages
  if is_installed; then return 0; fi
  command -v go >/dev/null || die "go not found: building the node needs Go >= 1.26"
  mkdir -p "$BIN_DIR" "$BUILD_ROOT"
  exec 7>"$BUILD_ROOT/.install.lock"
  flock -w 3600 7 || die "timed out waiting for another install (lock $BUILD_ROOT/.install.lock)"
  go_env
  local started=$SECONDS
  [[ -x "$CONTAINERD_DIR/containerd" && -x "$CONTAINERD_DIR/ctr" && -x "$CONTAINERD_DIR/containerd-shim-runc-v2" ]] ||
    build_containerd
  [[ -x "$COREDNS_BIN" ]] || build_coredns
  kube_sh install
  [[ -s "$PAUSE_ARCHIVE" ]] || build_pause_image
  [[ -s "$COREDNS_ARCHIVE" ]] || build_coredns_image
  exec 7>&-
  log "install done in $((SECONDS - started))s"
}

# ---------------------------------------------------------------- host state

# The cgroup the pods live under: a child of the cgroup this script runs in (per hierarchy the
# deepest one, so every pod stays inside whatever limits the machine puts on us), created in
# every cgroup v1 hierarchy, with cpuset's CPUs and memory nodes copied down.
cgroup_root() {
  local base
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    base="$(sed -n 's/^0:://p' /proc/self/cgroup)"
  else
    base="$(awk -F: '{ if (length($3) > length(best)) best = $3 } END { print best }' /proc/self/cgroup)"
  fi
  printf '%s/streamflow-node\n' "${base%/}"
}

setup_cgroups() {
  local root="$1" h dir rel part f
  if [[ -f /sys/fs/cgroup/cgroup.controllers ]]; then
    mkdir -p "/sys/fs/cgroup$root"
    return 0
  fi
  for h in /sys/fs/cgroup/*/; do
    h="${h%/}"
    [[ -L "$h" ]] && continue
    mountpoint -q "$h" || continue
    [[ "$(basename "$h")" == unified ]] && continue
    dir="$h"
    rel="${root#/}"
    while IFS= read -r part; do
      [[ -n "$part" ]] || continue
      mkdir -p "$dir/$part" || die "cannot create cgroup $dir/$part"
      for f in cpuset.cpus cpuset.mems; do
        if [[ -f "$dir/$part/$f" && -z "$(cat "$dir/$part/$f")" ]]; then
          cat "$dir/$f" >"$dir/$part/$f" || die "cannot set $dir/$part/$f"
        fi
      done
      dir="$dir/$part"
    done < <(tr '/' '\n' <<<"$rel")
  done
}

# Removes the node's cgroup subtree (empty once every pod is gone) in every hierarchy.
remove_cgroups() {
  local root="$1" h
  [[ "$root" == */streamflow-node ]] || return 0
  for h in /sys/fs/cgroup/*/ /sys/fs/cgroup/; do
    [[ -d "${h%/}$root" ]] || continue
    find "${h%/}$root" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d "${h%/}$root" ]] && log "cgroup ${h%/}$root is not empty; left in place"
  done
  return 0
}

save_host_state() {
  local s v p
  if [[ ! -f "$SAVED_SYSCTLS" ]]; then
    : >"$SAVED_SYSCTLS.tmp"
    for s in "${SYSCTLS[@]}"; do
      v="$(sysctl -n "$s" 2>/dev/null)" || continue
      printf '%s=%s\n' "$s" "$v" >>"$SAVED_SYSCTLS.tmp"
    done
    mv "$SAVED_SYSCTLS.tmp" "$SAVED_SYSCTLS"
  fi
  if [[ ! -f "$SAVED_PATHS" ]]; then
    : >"$SAVED_PATHS.tmp"
    for p in "${HOST_PATHS[@]}"; do [[ -e "$p" ]] || printf '%s\n' "$p" >>"$SAVED_PATHS.tmp"; done
    mv "$SAVED_PATHS.tmp" "$SAVED_PATHS"
  fi
}

restore_host_state() {
  local line p
  if [[ -f "$SAVED_SYSCTLS" ]]; then
    while IFS= read -r line; do
      [[ -n "$line" ]] && sysctl -q -w "$line" >/dev/null 2>&1 || log "could not restore sysctl $line"
    done <"$SAVED_SYSCTLS"
    rm -f "$SAVED_SYSCTLS"
  fi
  if [[ -f "$SAVED_PATHS" ]]; then
    while IFS= read -r p; do
      [[ -n "$p" && -e "$p" ]] || continue
      unmount_under "$p"
      rm -rf -- "$p"
    done <"$SAVED_PATHS"
    rm -f "$SAVED_PATHS"
  fi
}

# unmount_under DIR : unmounts every mount point at or below DIR, deepest first.
unmount_under() {
  local dir="$1" m
  [[ -e "$dir" ]] || return 0
  dir="$(realpath "$dir")"
  awk '{ print $2 }' /proc/self/mounts | sed 's/\\040/ /g' | sort -r | while IFS= read -r m; do
    if [[ "$m" == "$dir" || "$m" == "$dir"/* ]]; then umount -l "$m" 2>/dev/null || log "could not unmount $m"; fi
  done
}

setup_network() {
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link add "$BRIDGE" type bridge || die "cannot create the bridge $BRIDGE"
    touch "$BRIDGE_FILE"
  fi
  ip addr show dev "$BRIDGE" | grep -q "inet $NODE_IP/" ||
    ip addr add "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE" || die "cannot address the bridge $BRIDGE"
  ip link set "$BRIDGE" up
  # Pod → Service → pod is routed by this host; nothing to or from the bridge may be forwarded
  # to or from anywhere else. When forwarding was off before, nothing else is forwarded either.
  local others=accept
  [[ "$(grep '^net.ipv4.ip_forward=' "$SAVED_SYSCTLS" 2>/dev/null)" == "net.ipv4.ip_forward=0" ]] && others=drop
  nft -f - <<EOF || die "cannot create the nftables table $NFT_TABLE"
table inet $NFT_TABLE
delete table inet $NFT_TABLE
table inet $NFT_TABLE {
  chain forward {
    type filter hook forward priority filter; policy accept;
    iifname "$BRIDGE" oifname "$BRIDGE" accept
    iifname "$BRIDGE" drop
    oifname "$BRIDGE" drop
    $others
  }
}
EOF
  # Bridged pod traffic must pass the netfilter hooks (kube-proxy's rules); a module on kernels
  # that do not build it in.
  [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]] || modprobe br_netfilter 2>/dev/null || true
  sysctl -q -w net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1 >/dev/null ||
    die "cannot turn on IPv4 forwarding"
}

teardown_network() {
  nft delete table inet "$NFT_TABLE" 2>/dev/null || true
  if [[ -f "$BRIDGE_FILE" ]]; then
    ip link del "$BRIDGE" 2>/dev/null || true
    rm -f "$BRIDGE_FILE"
  fi
}

# ---------------------------------------------------------------- configuration files

write_configs() {
  local cgroot="$1"
  mkdir -p "$CTR_DIR/certs.d/_default" "$CNI_CONF_DIR" "$KUBELET_DIR" "$LOG_DIR" "$RUN_DIR/pod-logs"
  # containerd: its own root, state and socket; CRI with runc; no registry ever reached.
  cat >"$CTR_DIR/config.toml" <<EOF
# Generated by scripts/cluster.sh
version = 3
root = "$CTR_DIR/root"
state = "$CTR_DIR/state"
# The plugin that installs binaries from images into /opt/containerd: never used here.
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "$CTR_SOCK"
[ttrpc]
  address = "$CTR_SOCK.ttrpc"
[debug]
  address = "$CTR_DIR/debug.sock"

[plugins."io.containerd.cri.v1.runtime"]
  # Root on this machine lacks CAP_SYS_RESOURCE: a negative oom_score_adj would be refused
  # and every sandbox would fail to start.
  restrict_oom_score_adj = true
  # Pod network namespaces under the state directory, not /run/netns.
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$CTR_DIR/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["$CNI_BIN_DIR"]
    conf_dir = "$CNI_CONF_DIR"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$PAUSE_IMAGE"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "$CTR_DIR/certs.d"

[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF
  # Every registry is an address where nothing listens: an image that is not loaded fails to
  # pull at once, without a DNS lookup or a packet leaving the machine.
  cat >"$CTR_DIR/certs.d/_default/hosts.toml" <<EOF
# Generated by scripts/cluster.sh: no registry is reachable; images are loaded, never pulled.
server = "https://127.0.0.1:1"
[host."https://127.0.0.1:1"]
  capabilities = ["pull", "resolve"]
EOF
  cat >"$CNI_CONF_DIR/10-streamflow.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "streamflow",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$BRIDGE",
      "isGateway": false,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$RUN_DIR/cni/ipam",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
        "routes": [{"dst": "0.0.0.0/0", "gw": "$NODE_IP"}]
      }
    }
  ]
}
EOF
  cat >"$RUN_DIR/kubelet-config.yaml" <<EOF
# Generated by scripts/cluster.sh
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI_DIR/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CTR_SOCK
cgroupDriver: cgroupfs
cgroupRoot: $cgroot
failCgroupV1: false
failSwapOn: false
# The host's iptables are not the node's to change.
makeIPTablesUtilChains: false
# Pods resolve cluster names only: no search domains or servers of the host.
resolvConf: ""
clusterDNS: [$DNS_SERVICE_IP]
clusterDomain: cluster.local
podLogsDir: $RUN_DIR/pod-logs
# Loaded images cannot be pulled again: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%}
rotateCertificates: false
serializeImagePulls: false
EOF
  cat >"$RUN_DIR/kube-proxy-config.yaml" <<EOF
# Generated by scripts/cluster.sh
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: nftables
clientConnection: {kubeconfig: $(component_kubeconfig kube-proxy)}
hostnameOverride: $NODE_NAME
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: ["$NODE_IP/32"]
# 0: leave the host's conntrack sysctls as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
}

# ---------------------------------------------------------------- processes

pidfile() { printf '%s\n' "$RUN_DIR/$1.pid"; }
# A string only the command line of this cluster's process NAME contains.
match_of() {
  case "$1" in
    containerd) printf '%s\n' "--config=$CTR_DIR/config.toml" ;;
    kubelet) printf '%s\n' "--root-dir=$KUBELET_DIR" ;;
    kube-proxy) printf '%s\n' "--config=$RUN_DIR/kube-proxy-config.yaml" ;;
    *) printf '%s\n' "--kubeconfig=$(component_kubeconfig "${1#kube-}")" ;;
  esac
}
proc_pid() { pidfile_pid "$(pidfile "$1")" "$(match_of "$1")"; }

# launch NAME CMD... : starts CMD in a session of its own, output to logs/NAME.log.
launch() {
  local name="$1" pid
  shift
  if proc_pid "$name" >/dev/null; then return 0; fi
  pid="$(sf_launch "$(pidfile "$name")" "$LOG_DIR/$name.log" "$@")" || die "$name did not start"
  log "started $name (pid $pid, log $LOG_DIR/$name.log)"
}

# wait_until WHAT TIMEOUT NAME CMD... : runs CMD until it succeeds; fails when process NAME dies
# or TIMEOUT seconds pass, printing its log.
wait_until() {
  local what="$1" timeout="$2" name="$3" deadline
  shift 3
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "$name" ]] && ! proc_pid "$name" >/dev/null; then
      tail -n 30 "$LOG_DIR/$name.log" >&2 || true
      die "$name exited while waiting for: $what"
    fi
    if ((SECONDS >= deadline)); then
      [[ -n "$name" ]] && { tail -n 30 "$LOG_DIR/$name.log" >&2 || true; }
      die "timed out after ${timeout}s waiting for: $what"
    fi
    sleep 0.5
  done
}

kctl() { "$(KUBE_BIN kubectl)" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }
ctr_() { "$CONTAINERD_DIR/ctr" --address "$CTR_SOCK" --namespace k8s.io "$@"; }
healthz() { curl -fsSk --noproxy '*' --max-time 3 -o /dev/null "$1" 2>/dev/null; }

start_containerd() {
  # containerd finds its shim on PATH.
  launch containerd env PATH="$CONTAINERD_DIR:$PATH" "$CONTAINERD_DIR/containerd" \
    --config="$CTR_DIR/config.toml" --log-level=warn
  wait_until "containerd to answer" 60 containerd ctr_ version
}

cmd_load() {
  local f
  (($# > 0)) || die "usage: $0 load ARCHIVE..."
  for f in "$@"; do
    [[ -s "$f" ]] || die "no image archive at $f"
    # (ctr warns on every call that cgroup v1 is deprecated: only its failures are shown.)
    ctr_ images import --snapshotter overlayfs "$f" >/dev/null 2>"$LOG_DIR/ctr-import.log" ||
      { cat "$LOG_DIR/ctr-import.log" >&2; die "importing $f into containerd failed"; }
    log "loaded $(basename "$f")"
  done
  prune_replaced_images
}

# An import under a tag that exists moves the tag, but the image it named stays under the CRI's
# `sha256:<id>` name with all its layers (never freed: 42 of them held 6.9 GB here).
# Those images, which no tag points to any more, go; a synchronous removal garbage-collects the
# content and snapshots only they held. Images of running containers keep their snapshots.
prune_replaced_images() {
  local images replaced
  images="$(ctr_ images ls 2>/dev/null)" || { log "warning: listing images failed"; return 0; }
  replaced="$(awk 'NR > 1 && $1 !~ /^sha256:/ { tagged[$3] = 1 }
    NR > 1 && $1 ~ /^sha256:/ { id[$1] = $3 }
    END { for (ref in id) if (!(id[ref] in tagged)) print ref }' <<<"$images")"
  [[ -n "$replaced" ]] || return 0
  # shellcheck disable=SC2086 # one reference per word
  ctr_ images rm --sync $replaced >/dev/null 2>"$LOG_DIR/ctr-prune.log" ||
    log "warning: removing replaced images failed ($LOG_DIR/ctr-prune.log)"
  log "removed $(wc -w <<<"$replaced") replaced images"
}

start_kubelet() {
  local labels
  labels="$(node_labels)" || die "cannot read kind-config.yaml"
  launch kubelet "$(KUBE_BIN kubelet)" --config="$RUN_DIR/kubelet-config.yaml" \
    --kubeconfig="$(component_kubeconfig kubelet)" --root-dir="$KUBELET_DIR" --cert-dir="$KUBELET_DIR/pki" \
    --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" --node-labels="$labels" --v=1
}

start_controllers() {
  local cm sched
  cm="$(component_kubeconfig controller-manager)"
  sched="$(component_kubeconfig scheduler)"
  launch kube-controller-manager "$(KUBE_BIN kube-controller-manager)" --kubeconfig="$cm" \
    --authentication-kubeconfig="$cm" --authorization-kubeconfig="$cm" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI_DIR/sa.key" --root-ca-file="$PKI_DIR/ca.crt" \
    --cluster-name=streamflow --service-cluster-ip-range="$SERVICE_CIDR" --v=1
  launch kube-scheduler "$(KUBE_BIN kube-scheduler)" --kubeconfig="$sched" \
    --authentication-kubeconfig="$sched" --authorization-kubeconfig="$sched" \
    --bind-address=127.0.0.1 --leader-elect=false --v=1
  launch kube-proxy "$(KUBE_BIN kube-proxy)" --config="$RUN_DIR/kube-proxy-config.yaml" --v=1
}

node_ready() {
  [[ "$(kctl get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

dns_available() {
  [[ "$(kctl -n kube-system get deploy coredns -o jsonpath='{.status.availableReplicas}' 2>/dev/null)" == 1 ]]
}

# Cluster DNS: CoreDNS's manifest with this cluster's addresses, applied until it is Ready.
start_dns() {
  sed -e "s/@DNS_SERVICE_IP@/$DNS_SERVICE_IP/g" -e "s#@COREDNS_IMAGE@#$COREDNS_IMAGE#g" \
    "$SCRIPT_DIR/cluster/coredns/coredns.yaml" | kctl apply -f - >/dev/null ||
    die "applying cluster DNS failed"
  wait_until "cluster DNS to be available" "$CLUSTER_START_TIMEOUT" "" dns_available
}

all_running() {
  local p
  kube_sh status >/dev/null 2>&1 || return 1
  for p in containerd kubelet kube-proxy kube-controller-manager kube-scheduler; do
    proc_pid "$p" >/dev/null || return 1
  done
}

cmd_up() {
  [[ "$(id -u)" == 0 ]] || die "a node runs containers: run as root"
  exec 9>"$RUN_DIR/.lock"
  flock -w 600 9 || die "another up/down is in progress (lock $RUN_DIR/.lock)"
  if all_running && node_ready && dns_available; then
    log "already up (node $NODE_NAME Ready; kubeconfig $ADMIN_KUBECONFIG)"
    return 0
  fi
  cmd_install
  local started=$SECONDS cgroot
  # What a cluster that did not go down cleanly left behind goes first, so `up` starts an empty
  # cluster; one whose processes all run is only waited for.
  if ! all_running && { [[ -f "$SAVED_SYSCTLS" || -f "$CGROUP_FILE" ]] ||
    ls "$RUN_DIR"/*.pid >/dev/null 2>&1 || kube_sh status >/dev/null 2>&1; }; then
    log "clearing what an earlier cluster left"
    teardown
  fi
  save_host_state
  cgroot="$(cat "$CGROUP_FILE" 2>/dev/null || cgroup_root)"
  printf '%s\n' "$cgroot" >"$CGROUP_FILE"
  setup_cgroups "$cgroot"
  setup_network
  kube_sh start
  write_configs "$cgroot"
  start_containerd
  cmd_load "$PAUSE_ARCHIVE" "$COREDNS_ARCHIVE"
  start_controllers
  start_kubelet
  wait_until "node $NODE_NAME to be Ready" "$CLUSTER_START_TIMEOUT" kubelet node_ready
  wait_until "kube-proxy to be healthy" 60 kube-proxy healthz http://127.0.0.1:10256/healthz
  wait_until "the default ServiceAccount" 60 kube-controller-manager kctl get serviceaccount default
  start_dns
  log "up in $((SECONDS - started))s: node $NODE_NAME Ready, cluster DNS on $DNS_SERVICE_IP"
  log "use: export KUBECONFIG=$ADMIN_KUBECONFIG   or: $0 kubectl ..."
}

# Every pod goes before the node does, through the kubelet, so that each sandbox's network and
# mounts are torn down the normal way; what is left after that is killed and removed here.
remove_pods() {
  local deadline
  if kube_sh status >/dev/null 2>&1 && proc_pid kubelet >/dev/null; then
    kctl delete pods --all --all-namespaces --grace-period=0 --force --wait=false >/dev/null 2>&1 || true
    deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
      [[ -z "$(ctr_ tasks ls -q 2>/dev/null)" ]] && break
      sleep 0.5
    done
  fi
  if proc_pid containerd >/dev/null; then
    local t c
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks kill -s SIGKILL "$t" >/dev/null 2>&1 || true; done
    for t in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$t" >/dev/null 2>&1 || true; done
    for c in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers delete "$c" >/dev/null 2>&1 || true; done
  fi
}

# Shims outlive containerd: kill those serving this cluster's containerd (and nothing else).
kill_shims() {
  local pid
  for pid in $(pgrep -f "containerd-shim-runc-v2 .*-address $CTR_SOCK" 2>/dev/null); do
    kill -KILL "$pid" 2>/dev/null || true
  done
}

cmd_down() {
  exec 9>"$RUN_DIR/.lock"
  flock -w 600 9 || die "another up/down is in progress (lock $RUN_DIR/.lock)"
  teardown
  log "down"
}

# Stops whatever of the cluster runs and removes what it left, whether it went down cleanly or
# not (a killed session leaves mounts, cgroups, the bridge, changed sysctls).
teardown() {
  # Controllers first (nothing recreates a pod), then the pods, then the node, then the rest.
  stop_pidfile "$(pidfile kube-controller-manager)" 30 "$(match_of kube-controller-manager)" || true
  stop_pidfile "$(pidfile kube-scheduler)" 30 "$(match_of kube-scheduler)" || true
  remove_pods
  stop_pidfile "$(pidfile kubelet)" 30 "$(match_of kubelet)" || true
  if proc_pid kube-proxy >/dev/null; then
    stop_pidfile "$(pidfile kube-proxy)" 30 "$(match_of kube-proxy)" || true
  fi
  # kube-proxy's own cleanup deletes its nftables tables.
  if [[ -x "$(KUBE_BIN kube-proxy)" && -f "$RUN_DIR/kube-proxy-config.yaml" ]]; then
    "$(KUBE_BIN kube-proxy)" --config="$RUN_DIR/kube-proxy-config.yaml" --cleanup >>"$LOG_DIR/kube-proxy.log" 2>&1 || true
  fi
  stop_pidfile "$(pidfile containerd)" 30 "$(match_of containerd)" || true
  kill_shims
  unmount_under "$RUN_DIR"
  if [[ -f "$CGROUP_FILE" ]]; then
    remove_cgroups "$(cat "$CGROUP_FILE")"
    rm -f "$CGROUP_FILE"
  fi
  # The API server listens on the bridge's address: it goes before the bridge does.
  kube_sh stop
  teardown_network
  restore_host_state
  # Pods and their network state are gone with the node; images and the control plane's
  # PKI stay (the next `up` reuses them).
  rm -rf -- "$CTR_DIR/state" "$KUBELET_DIR" "$RUN_DIR/cni/ipam" "$RUN_DIR/kube/etcd"
  # The kubeconfigs name the bridge's address, which without the bridge routes off the machine:
  # a kubectl left pointing at them fails here instead (kube.sh writes them on every start).
  rm -f -- "$ADMIN_KUBECONFIG" "$RUN_DIR"/kube/*.kubeconfig
}

cmd_status() {
  local p pid rc=0
  kube_sh status | sed 's/^/control plane: /' || rc=3
  for p in containerd kubelet kube-proxy kube-controller-manager kube-scheduler; do
    if pid="$(proc_pid "$p")"; then echo "$p: running, pid $pid"; else echo "$p: stopped"; rc=3; fi
  done
  if ((rc == 0)); then
    if node_ready; then echo "node $NODE_NAME: Ready"; else echo "node $NODE_NAME: not Ready"; rc=3; fi
  fi
  echo "kubeconfig: $ADMIN_KUBECONFIG   logs: $LOG_DIR"
  return "$rc"
}

cmd_logs() {
  local which="${1:-kubelet}" n="${2:-100}"
  case "$which" in
    apiserver | etcd) kube_sh logs "$which" "$n" ;;
    *) tail -n "$n" "$LOG_DIR/$which.log" ;;
  esac
}

main() {
  local cmd="${1:-}"
  [[ $# -gt 0 ]] && shift
  case "$cmd" in
    install) cmd_install ;;
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    load) cmd_load "$@" ;;
    images) ctr_ images ls -q 2>/dev/null ;;
    kubectl) kctl "$@" ;;
    env)
      mkdir -p "$RUN_DIR/bin"
      ln -sf "$(KUBE_BIN kubectl)" "$RUN_DIR/bin/kubectl"
      printf 'export KUBECONFIG=%q PATH=%q:"$PATH"\n' "$ADMIN_KUBECONFIG" "$RUN_DIR/bin"
      ;;
    kubeconfig) printf '%s\n' "$ADMIN_KUBECONFIG" ;;
    address) printf '%s\n' "$NODE_IP" ;;
    logs) cmd_logs "$@" ;;
    -h | --help | help) sf_usage 0 ;;
    *) sf_usage 2 ;;
  esac
}

main "$@"
