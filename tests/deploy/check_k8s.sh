#!/usr/bin/env bash
# Render every kustomization under k8s/ that is deployable (k8s/overlays/*, k8s/site-example) with the
# pinned kubectl (kustomize built in, no cluster), validate every object against the pinned Kubernetes
# version's schemas (kubernetes-validate --strict: unknown fields fail), and scan them with checkov.
# Run by `make deploy-lint`; tests/deploy/test_deploy_k8s.py runs it on broken copies too.
#
# Usage: check_k8s.sh BIN_DIR KUBERNETES_VERSION [K8S_DIR [OUT_DIR]]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
bin="${1:?BIN_DIR (the lint venv bin folder)}"
version="${2:?KUBERNETES_VERSION, e.g. 1.34.0}"
k8s="${3:-$repo/k8s}"
out="${4:-$(mktemp -d)}"
[[ -n "${4:-}" ]] || trap 'rm -rf "$out"' EXIT
mkdir -p "$out"

count=0
for dir in "$k8s"/overlays/*/ "$k8s"/site-example/; do
  [[ -f "$dir/kustomization.yaml" ]] || continue
  name="$(basename "$dir")"
  "$bin/kubectl" kustomize "$dir" > "$out/$name.yaml" || { echo "FAIL: kustomize build $dir" >&2; exit 1; }
  count=$((count + 1))
done
[[ $count -gt 0 ]] || { echo "FAIL: no kustomization found under $k8s/overlays" >&2; exit 1; }

# --quiet prints only warnings and failures. A warning (a kind without a schema, a typo in apiVersion)
# is a failure too: the object would be checked by nothing.
report="$("$bin/kubernetes-validate" --kubernetes-version "$version" --strict --quiet "$out"/*.yaml 2>&1)" \
  || { echo "$report" >&2; echo "FAIL: kubernetes-validate" >&2; exit 1; }
if [[ -n "$report" ]]; then
  echo "$report" >&2
  echo "FAIL: kubernetes-validate warned (kind or apiVersion without a schema in Kubernetes $version)" >&2
  exit 1
fi

"$bin/checkov" --directory "$out" --framework kubernetes --quiet --compact --skip-download
echo "k8s: $count kustomizations rendered, valid for Kubernetes $version (strict), checkov clean"
