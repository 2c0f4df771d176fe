#!/usr/bin/env bash
# Builds kube-apiserver and kube-controller-manager from the k8s.io/kubernetes Go module
# (the way envtest gets real control-plane binaries, without Docker) and caches them
# outside the repository, so a second run only checks a stamp file. Prints the bin dir.
#
#   build-control-plane.sh                 kube-apiserver, kube-controller-manager
#   build-control-plane.sh --with-kubectl  the same plus kubectl of the same version
#   build-control-plane.sh --with-kubelet  the same plus kubelet (the e2e tier's node)
#   build-control-plane.sh --with-pods     the same plus kubelet, kube-scheduler and kube-proxy
#                                          (a node that runs Deployments on a pod network)
#
# k8s.io/kubernetes replaces its staging modules (k8s.io/api, k8s.io/client-go, ...) with
# local paths, which `go build` of a dependency ignores; a small wrapper module pins each
# staging module to the matching v0.x release instead.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-v1.36.3}"
STAGING_VERSION="v0.${K8S_VERSION#v1.}"
CACHE_DIR="${SIMACAN_K8S_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/simacan-token-operator}"
BIN_DIR="$CACHE_DIR/k8s-$K8S_VERSION/bin"
# Bump when the way the binaries are built changes, so cached binaries are rebuilt.
RECIPE="2"

targets=(kube-apiserver kube-controller-manager)
for arg in "$@"; do
    case "$arg" in
        --with-kubectl) targets+=(kubectl) ;;
        --with-kubelet) targets+=(kubelet) ;;
        --with-pods) targets+=(kubelet kube-scheduler kube-proxy) ;;
        *) echo "usage: $0 [--with-kubectl] [--with-kubelet] [--with-pods]" >&2; exit 2 ;;
    esac
done

built() {
    local target
    for target in "${targets[@]}"; do
        [[ -x "$BIN_DIR/$target" && "$(cat "$BIN_DIR/.$target.recipe" 2>/dev/null)" == "$RECIPE" ]] || return 1
    done
}

if built; then
    echo "$BIN_DIR"
    exit 0
fi

command -v go >/dev/null || { echo "go is required to build the control plane" >&2; exit 1; }
work="$CACHE_DIR/k8s-$K8S_VERSION/wrapper"
mkdir -p "$work" "$BIN_DIR"
# One builder at a time; whoever waited finds the binaries built.
exec 9>"$CACHE_DIR/k8s-$K8S_VERSION/.lock"
flock 9
if built; then
    echo "$BIN_DIR"
    exit 0
fi
cd "$work"

# Read the list of staging modules from k8s.io/kubernetes' own go.mod.
modfile=$(GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
go_directive=$(awk '$1=="go"{print $2; exit}' "$modfile")
mapfile -t staging < <(awk '$1 ~ /^k8s\.io\// && $2=="=>" && $3 ~ /^\.\/staging\// {print $1}' "$modfile" | sort -u)
[[ ${#staging[@]} -gt 0 ]] || { echo "no staging modules found in $modfile" >&2; exit 1; }

{
    echo "module simacan.local/controlplane"
    echo
    echo "go $go_directive"
    echo
    echo "require k8s.io/kubernetes $K8S_VERSION"
    echo
    echo "replace ("
    for m in "${staging[@]}"; do echo "	$m => $m $STAGING_VERSION"; done
    echo ")"
} > go.mod
cat > tools.go <<'GO'
//go:build tools

package tools

import (
	_ "k8s.io/kubernetes/cmd/kube-apiserver"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager"
	_ "k8s.io/kubernetes/cmd/kubectl"
)
GO
echo "building ${targets[*]} $K8S_VERSION (first run only; several minutes)" >&2
GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>&1 || true
GOFLAGS=-mod=mod go get "k8s.io/kubernetes@$K8S_VERSION" >&2

# Without these the binaries report v0.0.0-master, which kubectl and client libraries cannot parse.
minor="${K8S_VERSION#v1.}"
minor="${minor%%.*}"
ldflags="-s"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
done
export CGO_ENABLED=0
for target in "${targets[@]}"; do
    [[ -x "$BIN_DIR/$target" && "$(cat "$BIN_DIR/.$target.recipe" 2>/dev/null)" == "$RECIPE" ]] && continue
    # Build beside the target and rename, so an interrupted build never leaves a truncated binary.
    go build -mod=mod -trimpath -ldflags="$ldflags" -o "$BIN_DIR/.$target.partial" "k8s.io/kubernetes/cmd/$target" >&2
    mv -f "$BIN_DIR/.$target.partial" "$BIN_DIR/$target"
    echo "$RECIPE" > "$BIN_DIR/.$target.recipe"
done
echo "$BIN_DIR"
