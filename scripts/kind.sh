#!/usr/bin/env bash
# The whole streamflow install on a local kind cluster, for a user with Docker, and its removal.
#
# Usage: scripts/kind.sh up     create the kind cluster (kind-config.yaml), build the operator
#                               and job images and load them into it, install Strimzi, the
#                               streamflow-operator chart, Kafka, SeaweedFS and the buckets,
#                               the mock producers and the examples (namespace streamflow)
#        scripts/kind.sh down   delete the kind cluster (and everything in it)
#
# Needs: a running Docker engine; kind and kubectl on PATH (kind is built with `go install`
# into the cache if missing); Helm comes from scripts/helm.sh. Strimzi's operator is installed
# from its Helm chart on quay.io, so this needs internet access.
# kind and Docker do not run on the project's development machines, so this script itself is
# not run there; what it shares is: the test command runs the same install steps
# (scripts/install.sh), the same chart values, examples and kind-config.yaml node, and images
# built from the same Dockerfiles, on scripts/cluster.sh's one-node cluster (scripts/cluster-test).
# Only Strimzi differs there (its images cannot be pulled): a broker on the node stands behind
# the Service name examples/kafka-strimzi.yaml gives Kafka.
#
# Environment: KIND_CLUSTER (streamflow)   KIND_VERSION (v0.33.0, when kind must be built)
#   STRIMZI_VERSION (1.2.0)   NAMESPACE (streamflow)   IMAGE_TAG (0.1.0, the chart's appVersion)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
SF_LOG_TAG=kind

KIND_CLUSTER="${KIND_CLUSTER:-streamflow}"
KIND_VERSION="${KIND_VERSION:-v0.33.0}"
STRIMZI_VERSION="${STRIMZI_VERSION:-1.2.0}"
NAMESPACE="${NAMESPACE:-streamflow}"
IMAGE_TAG="${IMAGE_TAG:-0.1.0}"
CACHE="$(sf_cache_dir)"

kind_bin() {
  if command -v kind >/dev/null; then command -v kind; return; fi
  local bin="$CACHE/bin/kind-$KIND_VERSION"
  if [[ ! -x "$bin" ]]; then
    command -v go >/dev/null || die "kind not found and no Go to build it: install kind (https://kind.sigs.k8s.io)"
    log "building kind $KIND_VERSION (go install sigs.k8s.io/kind@$KIND_VERSION)"
    GOBIN="$CACHE/go/kind-$KIND_VERSION" GOPATH="$CACHE/go" CGO_ENABLED=0 \
      go install "sigs.k8s.io/kind@$KIND_VERSION" >&2
    mv -f "$CACHE/go/kind-$KIND_VERSION/kind" "$bin"
  fi
  printf '%s\n' "$bin"
}

up() {
  command -v docker >/dev/null || die "docker not found"
  docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
  command -v kubectl >/dev/null || die "kubectl not found on PATH"
  local kind helm
  kind="$(kind_bin)"
  helm="$(scripts/helm.sh path)"

  if "$kind" get clusters | grep -qx "$KIND_CLUSTER"; then
    log "kind cluster $KIND_CLUSTER exists"
  else
    "$kind" create cluster --name "$KIND_CLUSTER" --config kind-config.yaml --wait 120s
  fi
  kubectl config use-context "kind-$KIND_CLUSTER" >/dev/null

  log "building the images (first build: long, it compiles DataFusion and librdkafka)"
  docker build -f operator/Dockerfile -t "streamflow-operator:$IMAGE_TAG" .
  docker build -f job-image/Dockerfile -t "streamflow:$IMAGE_TAG" .
  "$kind" load docker-image --name "$KIND_CLUSTER" "streamflow-operator:$IMAGE_TAG" "streamflow:$IMAGE_TAG"

  # The install steps scripts/cluster-test runs on scripts/cluster.sh's cluster (scripts/install.sh).
  export NAMESPACE IMAGE_TAG HELM="$helm"
  scripts/install.sh namespace

  log "installing Strimzi $STRIMZI_VERSION (it watches its own namespace, $NAMESPACE)"
  "$helm" upgrade --install strimzi oci://quay.io/strimzi-helm/strimzi-kafka-operator \
    --version "$STRIMZI_VERSION" --namespace "$NAMESPACE" --wait --timeout 10m

  scripts/install.sh operator

  log "Kafka (Strimzi, KRaft)"
  kubectl -n "$NAMESPACE" apply -f examples/kafka-strimzi.yaml
  kubectl -n "$NAMESPACE" wait kafka/streamflow --for=condition=Ready --timeout=15m
  kubectl -n "$NAMESPACE" wait kafkatopic/user-events kafkatopic/transaction-events --for=condition=Ready --timeout=5m

  scripts/install.sh s3
  scripts/install.sh checks
  scripts/install.sh producers
  log "the example runs"
  local f
  for f in examples/*.yaml; do
    case "$f" in
      examples/checks.yaml | examples/kafka-strimzi.yaml | examples/s3-seaweedfs.yaml | \
        examples/s3-minio.yaml | examples/producers.yaml) ;;
      *) kubectl -n "$NAMESPACE" apply -f "$f" ;;
    esac
  done
  log "up. Try:"
  log "  kubectl -n $NAMESPACE get pipelineruns,jobs,pods"
  log "  kubectl -n $NAMESPACE logs deploy/streamflow-producers"
  log "  kubectl -n $NAMESPACE port-forward svc/streamflow-operator-metrics 8080  # /metrics"
  log "down: scripts/kind.sh down"
}

down() {
  local kind
  kind="$(kind_bin)"
  "$kind" delete cluster --name "$KIND_CLUSTER"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  *) sf_usage ;;
esac
