#!/usr/bin/env bash
# Render every kustomization under deploy/k8s, validate each against the Kubernetes schema in strict mode
# (unknown fields are errors), and run the checkov policy checks on it. No cluster is needed.
#
#   deploy/k8s/check.sh
#
# Needs kubectl and kubernetes-validate (both in the dev extra) and checkov ($CHECKOV, default `checkov`).
set -euo pipefail
cd "$(dirname "$0")/../.."
CHECKOV=${CHECKOV:-checkov}

# Policy findings accepted, and why (docs/deploying.md repeats this):
# - CKV_K8S_43 (image by digest), CKV_K8S_15 (imagePullPolicy Always): the project publishes no image, so there
#   is no digest to pin; an overlay sets `images: [{name: facegender, digest: ...}]` once its registry holds
#   one. IfNotPresent is what an image loaded into the cluster by hand (kind load, minikube image load) needs.
# - CKV_K8S_21 (default namespace), for the base only: a kustomize base leaves the namespace to its overlays.
ACCEPTED=CKV_K8S_43,CKV_K8S_15
ACCEPTED_IN_BASE=$ACCEPTED,CKV_K8S_21

out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
find deploy/k8s -name kustomization.yaml | sort | while read -r kustomization; do
    directory=$(dirname "$kustomization")
    rendered="$out/$(echo "${directory#deploy/k8s/}" | tr / -).yaml"
    kubectl kustomize "$directory" >"$rendered"
    # --no-warn would hide that a custom resource (the ServiceMonitor) has no schema to check against.
    kubernetes-validate --strict --quiet "$rendered"
    accepted=$ACCEPTED
    [ "$directory" = deploy/k8s/base ] && accepted=$ACCEPTED_IN_BASE
    "$CHECKOV" --quiet --compact --skip-download --framework kubernetes --skip-check "$accepted" --file "$rendered"
    echo "deploy/k8s check: $directory renders ($(grep -c '^kind:' "$rendered") objects), validates and passes checkov"
done
