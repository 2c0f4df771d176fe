#!/usr/bin/env bash
# Builds External Secrets Operator from the Go module proxy for `python -m benchmarks.compare`; caches the
# binary and its CRD bundle outside the repository; prints the cache dir. A second run only checks.
#
# ESO's go.mod has a `replace` directive, so `go install ...@VERSION` refuses: build from a writable
# copy of the module directory that `go mod download -json` names. Takes about 7 minutes on 2 idle
# cores; runs under `nice` because it is a benchmark peer, not something the tests need.
# With --cached it only checks: prints the cache dir, or exits 3 when there is no build.
set -euo pipefail

ESO_VERSION="${ESO_VERSION:-v0.16.2}"
CACHE_DIR="${SIMACAN_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/simacan-token-operator}/eso-$ESO_VERSION"
MODULE="github.com/external-secrets/external-secrets"

built() { [[ -x "$CACHE_DIR/external-secrets" && -s "$CACHE_DIR/bundle.yaml" ]]; }

if built; then
    echo "$CACHE_DIR"
    exit 0
fi
if [[ "${1:-}" == "--cached" ]]; then
    echo "External Secrets Operator $ESO_VERSION is not built in $CACHE_DIR" >&2
    exit 3
fi
command -v go >/dev/null || { echo "go is required to build External Secrets Operator" >&2; exit 1; }
mkdir -p "$CACHE_DIR"
exec 9>"$CACHE_DIR/.lock"
flock 9
if built; then
    echo "$CACHE_DIR"
    exit 0
fi

module_dir=$(go mod download -json "$MODULE@$ESO_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
src="$CACHE_DIR/src"
rm -rf "$src"
cp -r "$module_dir" "$src"
chmod -R u+w "$src"
echo "building External Secrets Operator $ESO_VERSION (first run only; several minutes)" >&2
(cd "$src" && nice -n 15 go build -trimpath -ldflags=-s -o "$CACHE_DIR/external-secrets.partial" .)
cp "$src/deploy/crds/bundle.yaml" "$CACHE_DIR/bundle.yaml.partial"
mv "$CACHE_DIR/bundle.yaml.partial" "$CACHE_DIR/bundle.yaml"
mv "$CACHE_DIR/external-secrets.partial" "$CACHE_DIR/external-secrets"
rm -rf "$src"
echo "$CACHE_DIR"
