#!/usr/bin/env bash
# Validates the manifests in this folder against the Kubernetes API's JSON schemas, offline:
# kubernetes-validate carries the schemas of every Kubernetes release it supports, so after
# pip has installed it into a temporary venv, nothing is fetched and no cluster is needed.
# Strict: a misspelled or unknown field fails, and so does a kind or apiVersion that has
# no schema (which the tool itself only warns about).
#
# Usage: deploy/kubernetes/validate.sh
# Env:   KUBERNETES_VERSIONS  the releases to validate against (default "1.29.0 1.37.0": the
#                             oldest we support, with native gRPC probes long stable, and the newest)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
versions="${KUBERNETES_VERSIONS:-1.29.0 1.37.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== installing kubernetes-validate into a temporary venv"
timeout 120 python3 -m venv "$work/venv"
timeout 600 "$work/venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.37.0
validator="$work/venv/bin/kubernetes-validate"

# Every manifest but the kustomization, which is kustomize's, not the API's.
manifests=()
for file in "$here"/*.yaml; do
    [ "$(basename "$file")" = kustomization.yaml ] || manifests+=("$file")
done

passed=0
failed=0

# Passes when the validator accepts every resource of the files given: exit 0 and an INFO
# line for each resource, no WARN (no schema for it) and no ERROR.
validates() {
    local version="$1"
    shift
    local status=0
    "$validator" --strict -k "$version" "$@" >"$work/out" 2>&1 || status=$?
    sed "s|$here/||; s|$work/||" "$work/out"
    [ "$status" = 0 ] && ! grep -qv '^INFO ' "$work/out"
}

for version in $versions; do
    echo "== Kubernetes $version"
    for file in "${manifests[@]}"; do
        if validates "$version" "$file"; then
            passed=$((passed + 1))
        else
            echo "FAILED: $(basename "$file") against Kubernetes $version"
            failed=$((failed + 1))
        fi
    done
done

echo "== kustomization.yaml lists every manifest, and only those"
if "$work/venv/bin/python" - "$here" "${manifests[@]}" <<'EOF'; then
import os, sys, yaml
here, manifests = sys.argv[1], sorted(os.path.basename(m) for m in sys.argv[2:])
with open(os.path.join(here, "kustomization.yaml")) as f:
    listed = sorted(yaml.safe_load(f)["resources"])
if listed != manifests:
    sys.exit(f"kustomization.yaml lists {listed}, the folder has {manifests}")
print(f"INFO kustomization.yaml lists {', '.join(listed)}")
EOF
    passed=$((passed + 1))
else
    failed=$((failed + 1))
fi

# A validator that found no schemas, or stopped checking, would pass everything: make
# sure it still rejects a field of the wrong type, a misspelled field, and an apiVersion
# that does not exist (which kubernetes-validate alone lets through with a warning).
echo "== broken manifests are rejected"
sed 's/^  replicas: 2$/  replicas: two/' "$here/deployment.yaml" >"$work/wrong-type.yaml"
sed 's/^      terminationGracePeriodSeconds:/      terminationGracePeriod:/' "$here/deployment.yaml" >"$work/misspelled.yaml"
sed 's|^apiVersion: autoscaling/v2$|apiVersion: autoscaling/v3|' "$here/hpa.yaml" >"$work/unknown-api.yaml"
for broken in wrong-type misspelled unknown-api; do
    if cmp -s "$work/$broken.yaml" "$here/deployment.yaml" || cmp -s "$work/$broken.yaml" "$here/hpa.yaml"; then
        echo "FAILED: could not make $broken.yaml (the manifest it edits has changed)"
        failed=$((failed + 1))
    elif validates "${versions%% *}" "$work/$broken.yaml"; then
        echo "FAILED: the validator accepted $broken.yaml"
        failed=$((failed + 1))
    else
        passed=$((passed + 1))
    fi
done

echo "manifests: $passed passed, $failed failed"
[ "$failed" = 0 ]
