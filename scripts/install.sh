#!/usr/bin/env bash
# The steps of docs/operations.md's install, one per command, each idempotent, against the
# cluster of `kubectl`'s current context: shared by scripts/kind.sh (a kind cluster, Docker)
# and scripts/cluster-test (scripts/cluster.sh's cluster, no Docker), so both run the same
# install. Kafka is not here: kind.sh installs Strimzi, cluster-test a broker on the node.
#
# Usage: scripts/install.sh namespace    the namespace, enforcing Pod Security "restricted"
#        scripts/install.sh operator     helm upgrade --install of charts/streamflow-operator
#        scripts/install.sh s3           examples/s3-seaweedfs.yaml; waits for the buckets
#        scripts/install.sh checks       the ConfigMap streamflow-checks (examples/checks.yaml)
#        scripts/install.sh producers    examples/producers.yaml; waits until they run
#
# Environment: NAMESPACE (streamflow)   RELEASE (streamflow-operator)   IMAGE_TAG (the chart's
#   appVersion)   HELM (scripts/helm.sh's)   KUBECTL (kubectl)   INSTALL_TIMEOUT (300 s)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/lib.sh
SF_LOG_TAG=install

NAMESPACE="${NAMESPACE:-streamflow}"
RELEASE="${RELEASE:-streamflow-operator}"
KUBECTL="${KUBECTL:-kubectl}"
INSTALL_TIMEOUT="${INSTALL_TIMEOUT:-300}"
k() { "$KUBECTL" -n "$NAMESPACE" "$@"; }

case "${1:-}" in
  namespace)
    "$KUBECTL" create namespace "$NAMESPACE" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
    "$KUBECTL" label namespace "$NAMESPACE" --overwrite pod-security.kubernetes.io/enforce=restricted >/dev/null
    log "namespace $NAMESPACE (pod-security.kubernetes.io/enforce=restricted)"
    ;;
  operator)
    helm="${HELM:-$(scripts/helm.sh path)}"
    args=()
    [[ -n "${IMAGE_TAG:-}" ]] && args+=(--set "image.tag=$IMAGE_TAG")
    "$helm" upgrade --install "$RELEASE" charts/streamflow-operator --namespace "$NAMESPACE" \
      "${args[@]}" --wait --timeout "${INSTALL_TIMEOUT}s" >/dev/null || die "helm install of the chart failed"
    log "the streamflow-operator chart (release $RELEASE) is installed and its operator is available"
    ;;
  s3)
    k apply -f examples/s3-seaweedfs.yaml >/dev/null
    k wait deploy/seaweedfs --for=condition=Available --timeout="${INSTALL_TIMEOUT}s" >/dev/null ||
      die "SeaweedFS did not become available"
    k wait job/s3-buckets --for=condition=Complete --timeout="${INSTALL_TIMEOUT}s" >/dev/null ||
      die "the bucket Job did not complete"
    log "the S3 server (SeaweedFS) runs and has the buckets landing and gold"
    ;;
  checks)
    k create configmap streamflow-checks --from-file=checks.yaml=examples/checks.yaml \
      --dry-run=client -o yaml | k apply -f - >/dev/null
    log "ConfigMap streamflow-checks (examples/checks.yaml)"
    ;;
  producers)
    k apply -f examples/producers.yaml >/dev/null
    k wait deploy/streamflow-producers --for=condition=Available --timeout="${INSTALL_TIMEOUT}s" >/dev/null ||
      die "the producers did not become available"
    log "the mock producers run"
    ;;
  *) sf_usage ;;
esac
