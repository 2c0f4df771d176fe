#!/usr/bin/env bash
# Installs what the e2e tier needs and is not in the repository: etcd (Debian's etcd-server),
# kubectl, the cached kube-apiserver/kube-controller-manager/kubelet/kube-scheduler/kube-proxy build,
# and for the node (localenv/node.py) Debian's containerd, runc and busybox-static; for its pod
# network (localenv/podnetwork.py) containernetworking-plugins, iptables and conntrack (kube-proxy);
# buildah to build the image (localenv/build-image.sh); for the alert tests Debian's prometheus
# (promtool too) and the Prometheus Operator's CRDs (localenv/prometheus-operator-crds.sh).
# Idempotent: with everything present it only checks, and never runs apt-get update.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
as_root=()
[[ $(id -u) -eq 0 ]] || as_root=(sudo)

missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v containerd >/dev/null && command -v ctr >/dev/null || missing+=(containerd)
command -v runc >/dev/null || missing+=(runc)
[[ -x /bin/busybox ]] && /bin/busybox --list >/dev/null 2>&1 || missing+=(busybox-static)
[[ -x /usr/lib/cni/bridge && -x /usr/lib/cni/host-local ]] || missing+=(containernetworking-plugins)
command -v iptables >/dev/null || missing+=(iptables)
command -v conntrack >/dev/null || missing+=(conntrack)
command -v buildah >/dev/null || missing+=(buildah)
command -v debootstrap >/dev/null || missing+=(debootstrap)
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
# promtool for the alert rule tests (tests/static) and prometheus for the e2e alert test.
command -v promtool >/dev/null && command -v prometheus >/dev/null || missing+=(prometheus)

if [[ ${#missing[@]} -gt 0 ]]; then
    echo "installing ${missing[*]} from Debian" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${as_root[@]}" apt-get update -qq >&2
    "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    # The packages enable a system etcd on :2379, a system containerd and a Prometheus on :9090;
    # the tests start their own.
    if [[ -d /run/systemd/system ]]; then
        "${as_root[@]}" systemctl disable --now etcd containerd prometheus >/dev/null 2>&1 || true
    fi
fi

if ! command -v kubectl >/dev/null; then
    # Debian's kubernetes-client is 1.20, far outside the supported skew with a 1.36 apiserver,
    # so build kubectl of the control plane's own version instead.
    echo "building kubectl (not on PATH)" >&2
    bin_dir="$("$here/build-control-plane.sh" --with-kubectl)"
    "${as_root[@]}" ln -sf "$bin_dir/kubectl" /usr/local/bin/kubectl
fi

# The Prometheus Operator's CRDs, for the e2e test that applies manifests/monitoring/.
"$here/prometheus-operator-crds.sh" >/dev/null

bin_dir="$("$here/build-control-plane.sh" --with-pods)"
echo "etcd: $(command -v etcd), kubectl: $(command -v kubectl), containerd: $(command -v containerd)," \
    "buildah: $(command -v buildah), control plane, kubelet, kube-scheduler, kube-proxy: $bin_dir" >&2
