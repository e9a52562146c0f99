#!/usr/bin/env bash
# Builds the project's images without Docker, from the project's own Dockerfiles, with buildah
# (Debian's, vfs storage, as root), and saves each as a docker-archive for
# `scripts/cluster.sh load`. Nothing is pulled: what the Dockerfiles take from registries is made
# here and passed in by build argument:
#   - RUNTIME_IMAGE: gcr.io/distroless/cc-debian12:nonroot, rebuilt from the same Debian 12
#     packages distroless puts in it (libc6, libssl3, libgcc-s1, libgomp1, libstdc++6,
#     gcc-12-base, base-files, netbase, tzdata, CA certificates) and its users and /tmp;
#   - BINARY_FROM: instead of the Dockerfile's compile stage (rust:1.95-bookworm, cargo build),
#     an image holding the binary the test command built (debug symbols stripped), at the path
#     the compile stage leaves it. The runtime stage - user, entrypoint, libraries, files - is
#     the one users build with Docker.
# Also the S3 server image examples/s3-seaweedfs.yaml names (chrislusf/seaweedfs:4.53): the
# SeaweedFS binary scripts/s3.sh builds (the same release) with a static busybox for the
# bucket Job's shell, as the upstream image has.
#
# Usage: scripts/images.sh build     build what is missing or older than its inputs; prints
#                                    the archives, one per line
#        scripts/images.sh archives  print the archives' paths
#
# Environment: IMAGE_TAG (0.1.0, the chart's appVersion)   CARGO_TARGET_DIR (the test command's:
#   $STREAMFLOW_CACHE/target)   CARGO_PROFILE (debug)   STREAMFLOW_CACHE (~/.cache/streamflow)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
SF_LOG_TAG=images

IMAGE_TAG="${IMAGE_TAG:-0.1.0}"
CACHE="$(sf_cache_dir)"
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$CACHE/target}"
CARGO_PROFILE="${CARGO_PROFILE:-debug}"
IMAGE_DIR="$CACHE/images"
WORK="$CACHE/images/build"
RUNTIME_IMAGE="streamflow.local/distroless/cc-debian12:nonroot"
SEAWEEDFS_IMAGE="docker.io/chrislusf/seaweedfs:4.53"
# The Debian packages of distroless's cc-debian12 (its base/config.bzl, cc/config.bzl and
# static image), in that image's order.
RUNTIME_PACKAGES=(base-files netbase tzdata libc6 libssl3 libgomp1 libstdc++6 libgcc-s1 gcc-12-base)


ensure_tools() {
  local missing=()
  command -v buildah >/dev/null || missing+=(buildah)
  command -v objcopy >/dev/null || missing+=(binutils)
  [[ -x /bin/busybox ]] || missing+=(busybox-static)
  ((${#missing[@]} == 0)) && return 0
  [[ "$(id -u)" == 0 ]] || die "missing packages: ${missing[*]}"
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" >&2 || die "apt-get install ${missing[*]} failed"
}

# newer TARGET INPUT... : true when TARGET is missing or older than any INPUT.
stale() {
  local target="$1" f
  shift
  [[ -s "$target" ]] || return 0
  for f in "$@"; do [[ "$f" -nt "$target" ]] && return 0; done
  return 1
}

runtime_base() {
  local dir="$WORK/runtime-base" root archive="$IMAGE_DIR/runtime-base.stamp" pkg deb
  if ! stale "$archive" "$0" && sf_buildah inspect --type image "$RUNTIME_IMAGE" >/dev/null 2>&1; then return 0; fi
  log "making $RUNTIME_IMAGE from Debian packages: ${RUNTIME_PACKAGES[*]}"
  rm -rf "$dir"
  mkdir -p "$dir/debs" "$dir/rootfs"
  root="$dir/rootfs"
  (cd "$dir/debs" && apt-get download "${RUNTIME_PACKAGES[@]}" >/dev/null 2>&1) ||
    (apt-get update -qq >&2 && cd "$dir/debs" && apt-get download "${RUNTIME_PACKAGES[@]}" >/dev/null) ||
    die "apt-get download ${RUNTIME_PACKAGES[*]} failed"
  for pkg in "${RUNTIME_PACKAGES[@]}"; do
    deb="$(ls "$dir/debs/${pkg}_"*.deb 2>/dev/null | head -n1)"
    [[ -n "$deb" ]] || die "no .deb for $pkg"
    dpkg-deb -x "$deb" "$root"
  done
  rm -rf "$root/usr/share/doc" "$root/usr/share/man" "$root/usr/share/info" "$root/usr/share/lintian"
  # The users, groups and name service switch of distroless's static image.
  mkdir -p "$root/etc/ssl/certs" "$root/home/nonroot" "$root/tmp"
  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
  echo 'hosts: files dns' >"$root/etc/nsswitch.conf"
  # distroless builds its bundle from Debian's ca-certificates; this machine's is the same one.
  [[ -s /etc/ssl/certs/ca-certificates.crt ]] || die "no /etc/ssl/certs/ca-certificates.crt (package ca-certificates)"
  cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/"
  chmod 1777 "$root/tmp"
  chown 65532:65532 "$root/home/nonroot"
  cat >"$dir/Containerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532
WORKDIR /home/nonroot
EOF
  sf_buildah bud --quiet --layers=false -t "$RUNTIME_IMAGE" -f "$dir/Containerfile" "$dir" >/dev/null ||
    die "building $RUNTIME_IMAGE failed"
  touch "$archive"
}

# binary_image NAME BINARY : an image with BINARY at /out/<name> (where the Dockerfiles' compile
# stage installs it), debug symbols stripped.
binary_image() {
  local name="$1" bin="$2" dir="$WORK/binary-$1"
  [[ -x "$bin" ]] || die "no $bin: build it first (the test command's cargo build)"
  rm -rf "$dir"
  mkdir -p "$dir/out"
  objcopy --strip-debug "$bin" "$dir/out/$name"
  printf 'FROM scratch\nCOPY out/ /out/\n' >"$dir/Containerfile"
  sf_buildah bud --quiet --layers=false -t "streamflow.local/binary/$name:$IMAGE_TAG" -f "$dir/Containerfile" "$dir" >/dev/null ||
    die "building the binary image of $name failed"
}

# project_image NAME DOCKERFILE : docker.io/library/NAME:IMAGE_TAG from DOCKERFILE, the binary
# NAME taken from the test command's build.
project_image() {
  local name="$1" dockerfile="$2" archive="$IMAGE_DIR/$1-$IMAGE_TAG.tar" bin="$CARGO_TARGET_DIR/$CARGO_PROFILE/$1"
  local ref="docker.io/library/$name:$IMAGE_TAG"
  if ! stale "$archive" "$bin" "$dockerfile" "$0" "$IMAGE_DIR/runtime-base.stamp"; then
    echo "$archive"
    return 0
  fi
  binary_image "$name" "$bin"
  sf_buildah bud --quiet --layers=false -t "$ref" -f "$dockerfile" \
    --build-arg RUNTIME_IMAGE="$RUNTIME_IMAGE" \
    --build-arg BINARY_FROM="streamflow.local/binary/$name:$IMAGE_TAG" . >/dev/null ||
    die "building $ref from $dockerfile failed"
  sf_image_save "$ref" "$archive"
  echo "$archive"
}

seaweedfs_image() {
  local archive="$IMAGE_DIR/seaweedfs-4.53.tar" weed dir="$WORK/seaweedfs"
  weed="$(scripts/s3.sh binary)" || die "no SeaweedFS binary (scripts/s3.sh install)"
  if ! stale "$archive" "$weed" "$0"; then
    echo "$archive"
    return 0
  fi
  rm -rf "$dir"
  mkdir -p "$dir/rootfs/bin" "$dir/rootfs/usr/bin" "$dir/rootfs/tmp" "$dir/rootfs/etc"
  cp /bin/busybox "$dir/rootfs/bin/"
  local c
  for c in sh grep echo cat ls; do ln -s busybox "$dir/rootfs/bin/$c"; done
  cp "$weed" "$dir/rootfs/usr/bin/weed"
  chmod 1777 "$dir/rootfs/tmp"
  printf 'root:x:0:0:root:/root:/bin/sh\n' >"$dir/rootfs/etc/passwd"
  cat >"$dir/Containerfile" <<'EOF'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/bin:/bin
ENTRYPOINT ["/usr/bin/weed"]
EOF
  sf_buildah bud --quiet --layers=false -t "$SEAWEEDFS_IMAGE" -f "$dir/Containerfile" "$dir" >/dev/null ||
    die "building $SEAWEEDFS_IMAGE failed"
  sf_image_save "$SEAWEEDFS_IMAGE" "$archive"
  echo "$archive"
}

cmd_build() {
  ensure_tools
  mkdir -p "$IMAGE_DIR" "$WORK"
  runtime_base
  project_image streamflow job-image/Dockerfile
  project_image streamflow-operator operator/Dockerfile
  seaweedfs_image
  sf_buildah_clean
}

case "${1:-}" in
  build) cmd_build ;;
  archives)
    printf '%s\n' "$IMAGE_DIR/streamflow-$IMAGE_TAG.tar" "$IMAGE_DIR/streamflow-operator-$IMAGE_TAG.tar" \
      "$IMAGE_DIR/seaweedfs-4.53.tar"
    ;;
  *) sf_usage ;;
esac
