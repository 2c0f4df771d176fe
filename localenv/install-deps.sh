#!/usr/bin/env bash
# Installs what the e2e control plane needs and is not in the repository: etcd (Debian's
# etcd-server), kubectl, and the cached kube-apiserver/kube-controller-manager build.
# Idempotent: with everything present it only checks, and never runs apt-get update.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
as_root=()
[[ $(id -u) -eq 0 ]] || as_root=(sudo)

if ! command -v etcd >/dev/null; then
    echo "installing etcd-server from Debian" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq >&2
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends etcd-server >&2
    # The package enables a system etcd on :2379; the tests start their own on free ports.
    if [[ -d /run/systemd/system ]]; then
        "${as_root[@]}" systemctl disable --now etcd >/dev/null 2>&1 || true
    fi
fi

if ! command -v kubectl >/dev/null; then
    # Debian's kubernetes-client is 1.20, far outside the supported skew with a 1.36 apiserver,
    # so build kubectl of the control plane's own version instead.
    echo "building kubectl (not on PATH)" >&2
    bin_dir="$("$here/build-control-plane.sh" --with-kubectl)"
    "${as_root[@]}" ln -sf "$bin_dir/kubectl" /usr/local/bin/kubectl
fi

"$here/build-control-plane.sh" >/dev/null
echo "etcd: $(command -v etcd), kubectl: $(command -v kubectl), control plane: $("$here/build-control-plane.sh")" >&2
