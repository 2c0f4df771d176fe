#!/usr/bin/env bash
# Builds a LOCAL STAND-IN for the base image the Dockerfile's first FROM names (python:3.11.17-slim-bookworm
# today), into buildah's storage under that name, so `buildah bud --pull=never` resolves FROM to it on a
# machine that reaches no container registry. It is NOT the release base: its Python is Debian bookworm's
# python3.11 package, which is Python 3.11.2 (not 3.11.17), installed from deb.debian.org with
# `debootstrap --variant=minbase` plus the bookworm-updates and bookworm-security updates.
#
# It copies the official image's layout where the Dockerfile depends on it: `python` and `python3` in
# /usr/local/bin (links to /usr/bin/python3.11), PATH and LANG as there, no EXTERNALLY-MANAGED marker, and a
# pip and setuptools installed for /usr/local from the wheels Debian ships for ensurepip (python3.11-venv:
# pip 23.0.1, setuptools 66.1.1), so that `python -m pip uninstall pip setuptools wheel` can remove them
# (dpkg's python3-pip cannot be uninstalled by pip, so it is not installed). `python -m venv --without-pip`
# works; groupadd/useradd (passwd) and ca-certificates are included. About 150 MB, docs and manuals removed.
#
# Storage: buildah's default (/var/lib/containers/storage, runroot /run/containers/storage), on the disk, so
# the stand-in and the layer cache outlive a test session. The driver is containers/storage's own choice
# (kernel overlay here, as root, without fuse-overlayfs; a driver that works, vfs at worst, elsewhere),
# and later runs keep the driver whose data they find. No config file is written, `buildah images` shows
# the result without flags, and the standard CONTAINERS_STORAGE_CONF and STORAGE_DRIVER variables still
# apply to every buildah call of this script and build-image.sh.
#
# Idempotent: the image carries a recipe label (a hash of this script); when the stored image has the same
# one the script only checks and exits. Prints the image reference on stdout; logs on stderr.
# `base-image.sh --print-reference` only prints the name the stand-in gets, and needs neither root nor buildah.
# Needs root (debootstrap, chroot) and the packages buildah and debootstrap (localenv/install-deps.sh installs them).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dockerfile="${SIMACAN_DOCKERFILE:-$here/../Dockerfile}"
mirror="${SIMACAN_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
security_mirror="${SIMACAN_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
suite=bookworm
recipe_label=local.simacan.stand-in.recipe
recipe="$(sha256sum "${BASH_SOURCE[0]}" | cut -c1-16)"

log() { echo "base-image: $*" >&2; }
die() { log "$*"; exit 1; }

# The first FROM's image (flags such as --platform skipped), as written in the Dockerfile.
from_image() {
    awk 'toupper($1) == "FROM" { for (i = 2; i <= NF; i++) if ($i !~ /^--/) { print $i; exit } }' "$1"
}

# What Docker and buildah make of a short name: docker.io/library/python:tag for python:tag.
normalise() {
    local name="$1" first="${1%%/*}"
    if [[ $name != */* ]]; then
        name="docker.io/library/$name"
    elif [[ $first != *.* && $first != *:* && $first != localhost ]]; then
        name="docker.io/$name"
    elif [[ $first == docker.io && ${name#docker.io/} != */* ]]; then
        name="docker.io/library/${name#docker.io/}"
    fi
    [[ ${name##*/} == *:* || $name == *@* ]] || name="$name:latest"
    echo "$name"
}

[[ -f $dockerfile ]] || die "no Dockerfile at $dockerfile"
written="$(from_image "$dockerfile")"
[[ -n $written ]] || die "no FROM line in $dockerfile"
if [[ $written == *@* ]]; then
    die "$dockerfile pins $written by digest; a locally built stand-in cannot have the official image's" \
        "digest, so buildah would not resolve it without a registry. Build from the tag alone (drop the digest)."
fi
[[ $written != *'$'* ]] || die "FROM $written uses a build argument; this script needs a literal image name"
reference="$(normalise "$written")"
if [[ ${1:-} == --print-reference ]]; then
    echo "$reference"
    exit 0
fi
[[ $# -eq 0 ]] || die "usage: $0 [--print-reference]"

[[ $(id -u) -eq 0 ]] || die "needs root (debootstrap, chroot and buildah's storage); run it with sudo"
for tool in buildah debootstrap flock; do
    command -v "$tool" >/dev/null || die "$tool is missing; run localenv/install-deps.sh"
done

# One builder at a time: a second caller waits here, then finds the image already built.
mkdir -p /run/lock
exec 9>/run/lock/simacan-base-image.lock
flock 9

stored_recipe() {
    buildah inspect --type image --format "{{index .OCIv1.Config.Labels \"$recipe_label\"}}" "$reference" \
        2>/dev/null || true
}

if [[ $(stored_recipe) == "$recipe" ]]; then
    log "$reference is already the stand-in of recipe $recipe; nothing to do"
    echo "$reference"
    exit 0
fi
previous_id="$(buildah inspect --type image --format '{{.FromImageID}}' "$reference" 2>/dev/null || true)"

work="$(mktemp -d /var/tmp/simacan-base-image.XXXXXX)"
rootfs="$work/rootfs"
container=""
cleanup() {
    local point
    # Deepest first; then never let rm cross into a mount that is still there.
    for point in $(awk -v prefix="$rootfs/" 'index($5, prefix) == 1 { print $5 }' /proc/self/mountinfo | sort -r); do
        umount --lazy "$point" 2>/dev/null || true
    done
    rm -rf --one-file-system "$work"
    [[ -z $container ]] || buildah rm "$container" >/dev/null 2>&1 || true
}
trap cleanup EXIT

started=$SECONDS
log "debootstrap $suite (minbase) from $mirror into $rootfs"
debootstrap --variant=minbase --components=main \
    --include=ca-certificates,passwd,python3.11 \
    "$suite" "$rootfs" "$mirror" >&2

# Nothing may stay mounted in the tree before files are deleted from it or it is copied.
assert_unmounted() {
    if awk -v prefix="$rootfs/" 'index($5, prefix) == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
        die "something is still mounted below $rootfs"
    fi
}
assert_unmounted

in_root() { chroot "$rootfs" /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

# As debian:bookworm-slim: no docs, manuals or translations, now or from later apt-get installs.
cat >"$rootfs/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
EOF
cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
rm -f "$rootfs/etc/apt/sources.list"
cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $mirror
Suites: $suite $suite-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $security_mirror
Suites: $suite-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF

# apt, not debootstrap, installs python3.11-venv: debootstrap cannot resolve its dependency on the virtual
# package python3.11-distutils.
log "applying $suite-updates and $suite-security; installing python3.11-venv"
cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
mount -t proc proc "$rootfs/proc"
in_root apt-get update -qq >&2
in_root apt-get -y -qq -o Dpkg::Options::=--force-confold upgrade >&2
in_root apt-get -y -qq --no-install-recommends install python3.11-venv >&2
umount "$rootfs/proc"
assert_unmounted

log "python, pip and setuptools for /usr/local, as the official image lays them out"
rm -f "$rootfs"/usr/lib/python3*/EXTERNALLY-MANAGED
# Debian's ensurepip refuses the system Python, so pip installs itself and setuptools from the same Debian
# wheels ensurepip would use (running pip from its wheel is supported). Outside a venv, Debian's scheme
# puts them into /usr/local/lib/python3.11/dist-packages, with the pip scripts in /usr/local/bin.
in_root sh -c 'set -- /usr/share/python-wheels/pip-*.whl && exec python3.11 "$1/pip" install --no-index --no-cache-dir \
    --disable-pip-version-check --find-links /usr/share/python-wheels pip setuptools' >&2
ln -sfn /usr/bin/python3.11 "$rootfs/usr/local/bin/python3"
ln -sfn python3 "$rootfs/usr/local/bin/python"
python_version="$(in_root python -c 'import platform; print(platform.python_version())')"
pip_version="$(in_root python -m pip --version | awk '{ print $2 }')"
# What the Dockerfile relies on, checked before anything is stored.
in_root python -m venv --without-pip /tmp/venv-check
in_root /tmp/venv-check/bin/python -c 'import sys; assert sys.prefix != sys.base_prefix'
[[ $(in_root python -m pip show --files pip | awk '/^Location:/ { print $2 }') == /usr/local/lib/* ]] ||
    die "pip did not land under /usr/local"
in_root sh -c 'command -v groupadd && command -v useradd' >/dev/null || die "groupadd/useradd missing"
[[ -s $rootfs/etc/ssl/certs/ca-certificates.crt ]] || die "ca-certificates did not build its bundle"

log "trimming"
in_root apt-get clean
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/var/cache/debconf/*-old \
    "$rootfs"/var/log/* "$rootfs"/tmp/* "$rootfs"/var/tmp/* "$rootfs"/root/.cache \
    "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/lintian/* \
    "$rootfs"/etc/resolv.conf "$rootfs"/etc/hostname
find "$rootfs"/usr/share/doc -mindepth 2 ! -name copyright ! -type d -delete
find "$rootfs"/usr/share/doc -mindepth 1 -type d -empty -delete
find "$rootfs"/usr/share/locale -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
# The container runtime provides /dev, /proc and /sys; the image keeps the empty directories.
find "$rootfs/dev" -mindepth 1 -delete
: >"$rootfs/etc/machine-id"

log "storing as $reference (Python $python_version, pip $pip_version)"
container="$(buildah from --pull=never scratch)"
mount_point="$(buildah mount "$container")"
cp -a "$rootfs/." "$mount_point/"
buildah umount "$container" >/dev/null
buildah config \
    --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --env PYTHON_VERSION="$python_version" \
    --cmd python3 \
    --label org.opencontainers.image.description="local stand-in for $written, built from Debian $suite packages (Python $python_version); not the release base" \
    --label org.opencontainers.image.version="$python_version" \
    --label local.simacan.stand-in.for="$written" \
    --label "$recipe_label=$recipe" \
    "$container"
buildah commit --quiet --rm "$container" "$reference" >/dev/null
container=""
if [[ -n $previous_id ]]; then
    # The stand-in of an older recipe, untagged now; kept only while a cached build still uses it.
    buildah rmi "$previous_id" >/dev/null 2>&1 || true
fi
[[ $(stored_recipe) == "$recipe" ]] || die "$reference was not stored with recipe $recipe"
log "done in $((SECONDS - started))s: $(buildah images --format '{{.Name}}:{{.Tag}} {{.ID}} {{.Size}}' "$reference")"
echo "$reference"
