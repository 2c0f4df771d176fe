#!/usr/bin/env bash
# Prints the directory holding the Prometheus Operator's CRDs (PrometheusRule, ServiceMonitor, ...),
# so the e2e tier can apply manifests/monitoring/ to a real API server that validates it. They ship
# in the operator's Go module: fetched once from the Go module proxy, then read from Go's module
# cache (offline, under a second). localenv/install-deps.sh fetches them ahead of the tests.
set -euo pipefail
VERSION=v0.80.1
command -v go >/dev/null || { echo "go is required to fetch the Prometheus Operator CRDs" >&2; exit 1; }
dir=$(cd "${TMPDIR:-/tmp}" && GOFLAGS=-mod=mod go mod download -json \
    "github.com/prometheus-operator/prometheus-operator@$VERSION" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')
echo "$dir/example/prometheus-operator-crd"
