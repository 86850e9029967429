#!/usr/bin/env bash
# Checks the Helm chart (helm/amp) the way a cluster would take it, offline: `helm lint
# --strict` and `helm template` over the main values combinations (single, cluster on
# JetStream, with the bundled NATS, on an external ScyllaDB/CQL cluster, with the Ingress on
# and off, with the prometheus-operator objects), then every rendered manifest validated
# against the Kubernetes API schemas by kubernetes-validate (PyPI; it ships the schemas, so
# nothing is fetched at run time), strict: an unknown field is an error.
#
# HELM names the helm binary (default: helm on PATH); KUBE_VERSION the Kubernetes version the
# chart is rendered for and validated against (default 1.30.0). Installs kubernetes-validate
# into a virtualenv under ~/.cache/amp-tools when missing. Prints "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/../.."

helm="${HELM:-helm}"
kube="${KUBE_VERSION:-1.30.0}"
venv="${XDG_CACHE_HOME:-$HOME/.cache}/amp-tools/kubernetes-validate"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'kubernetes-validate==1.37.0'
fi
validate="$venv/bin/kubernetes-validate"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# name | helm arguments
combinations=(
  "single|--set mode=single --set identity.generate=true"
  "single-ingress|--set mode=single --set identity.generate=true --set ingress.enabled=true --set ingress.tls.enabled=true"
  "cluster|--set mode=cluster --set identity.generate=true"
  "cluster-ingress|--set mode=cluster --set identity.generate=true --set ingress.enabled=true --set ingress.className=nginx"
  "cluster-nats|--set mode=cluster --set identity.generate=true --set nats.enabled=true --set nats.urls= --set nats.replicas=3 --set nats.auth.existingSecret=amp-nats-auth --set nats.config.cluster.routeURLs.user=route --set nats.config.cluster.routeURLs.password=secret"
  "cluster-federation|--set mode=cluster --set identity.generate=true --set federation.enabled=true --set networkPolicy.enabled=false"
  "cluster-cql|--set mode=cluster --set identity.generate=true --set store.backend=cql --set store.cql.username=amp --set store.cql.passwordSecret=amp-cql --set store.cql.tls.enabled=true --set store.cql.tls.secret=amp-cql-tls --set ingress.enabled=true"
  "cluster-cql-s3|--set mode=cluster --set identity.generate=true --set store.backend=cql --set store.blobs.backend=s3 --set store.blobs.s3.bucket=amp --set store.blobs.s3.endpoint=http://minio.minio.svc:9000 --set store.blobs.s3.allowHttp=true"
  "cluster-monitoring|--set mode=cluster --set identity.generate=true --set metrics.serviceMonitor.enabled=true --set metrics.prometheusRule.enabled=true --set metrics.grafanaDashboard.enabled=true"
)

passed=0
failed=0
for c in "${combinations[@]}"; do
  name="${c%%|*}"
  read -r -a args <<<"${c#*|}"
  out="$work/$name.yaml"
  ok=1
  if ! "$helm" lint --strict helm/amp --namespace amp --kube-version "$kube" "${args[@]}" >"$work/$name.lint" 2>&1; then
    echo "FAIL $name: helm lint --strict"; cat "$work/$name.lint"; ok=0
  fi
  if ! "$helm" template r helm/amp --namespace amp --kube-version "$kube" "${args[@]}" >"$out" 2>"$work/$name.err"; then
    echo "FAIL $name: helm template"; cat "$work/$name.err"; ok=0
  else
    docs="$(grep -c '^kind: ' "$out" || true)"
    # The prometheus-operator kinds are CRDs, whose schemas kubernetes-validate does not
    # ship: it warns about them (exit 0); the chart tests check their apiVersion and kind.
    if ! "$validate" --strict --quiet -k "$kube" "$out" >"$work/$name.validate" 2>&1; then
      echo "FAIL $name: kubernetes-validate ($docs documents)"; cat "$work/$name.validate"; ok=0
    fi
    [ "$ok" = 1 ] && echo "ok   $name: lint, template, $docs documents valid for Kubernetes $kube"
  fi
  if [ "$ok" = 1 ]; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
done
echo "helm chart: $passed passed, $failed failed"
[ "$failed" = 0 ]
