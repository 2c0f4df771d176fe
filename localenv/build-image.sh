#!/usr/bin/env bash
# Builds the operator image from the repository's Dockerfile, unchanged, with buildah and no registry, and
# writes it as an archive that `ctr images import` (containerd 1.6) names simacan.local/simacan-token-operator:TAG.
#
#   localenv/build-image.sh [--tag TAG] [--version VERSION] [--output ARCHIVE]
#
# TAG defaults to e2e; VERSION is the Dockerfile's VERSION build argument (its own default when not given);
# ARCHIVE defaults to ${TMPDIR:-/tmp}/simacan-token-operator-TAG.docker-archive.tar. Prints the archive path
# as the last line on stdout; everything else goes to stderr.
#
# - Needs buildah, runc, debootstrap and debian-archive-keyring from Debian (localenv/install-deps.sh).
# - localenv/base-image.sh puts a local stand-in for the FROM image into buildah's storage (Debian's
#   Python 3.11.2, not the release base), so the build runs with --pull=never.
# - --layers: a rebuild reuses every step whose inputs did not change; the pip cache mounts
#   (RUN --mount=type=cache) persist in buildah's cache directory between builds.
# - pip in the RUN steps gets the host's index, proxy, timeout and CA settings: a pip.conf merged from the
#   host's pip configuration files and PIP_* variables is bind-mounted read-only at /etc/pip.conf, and
#   every file or directory it names (the CA bundle) at the same path. RUN steps use the host's network.
#   buildah 1.28 leaves the mount point of a -v target that did not exist in the image: an empty
#   /etc/pip.conf stays in the image (an empty file, which pip reads as no settings).
# - docker-archive: containerd's importer turns its RepoTags into the image name as they are, which is how
#   `docker save` output has always been imported. (containerd 1.6.20 here also named an oci-archive
#   whose org.opencontainers.image.ref.name was the full reference, but ctr rewrites ref names through
#   its --base-name prefix logic, and a bare tag there is imported under an import-<date> name.)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/.." && pwd)"
repository=simacan.local/simacan-token-operator
tag=e2e
version=""
output=""

log() { echo "build-image: $*" >&2; }
die() { log "$*"; exit 1; }
usage() { sed -n '5p' "${BASH_SOURCE[0]}" | sed 's/^#  *//' >&2; exit 2; }

while [[ $# -gt 0 ]]; do
    case "$1" in
        --tag) [[ $# -ge 2 ]] || usage; tag="$2"; shift 2 ;;
        --version) [[ $# -ge 2 ]] || usage; version="$2"; shift 2 ;;
        --output) [[ $# -ge 2 ]] || usage; output="$2"; shift 2 ;;
        -h | --help) usage ;;
        *) log "unknown argument: $1"; usage ;;
    esac
done
[[ $tag =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "not a valid image tag: $tag"
image="$repository:$tag"
output="${output:-${TMPDIR:-/tmp}/simacan-token-operator-$tag.docker-archive.tar}"
mkdir -p "$(dirname "$output")"
output="$(cd "$(dirname "$output")" && pwd)/$(basename "$output")"

as_root=()
[[ $(id -u) -eq 0 ]] || as_root=(sudo)
for tool in buildah runc debootstrap; do
    command -v "$tool" >/dev/null || die "$tool is missing; run localenv/install-deps.sh"
done
[[ -f /usr/share/keyrings/debian-archive-keyring.gpg ]] || die "Debian's archive keyring is missing; run localenv/install-deps.sh"

started=$SECONDS
"${as_root[@]}" bash "$here/base-image.sh" >/dev/null
base_seconds=$((SECONDS - started))

work="$(mktemp -d "${TMPDIR:-/tmp}/simacan-build-image.XXXXXX")"
trap 'rm -rf "$work"' EXIT

# pip's own order: site files, user files, PIP_CONFIG_FILE, then PIP_* variables; only what says where
# and how to download. Prints the host paths those settings name, which are mounted at the same path.
python3 - "$work/pip.conf" >"$work/mounts" <<'EOF'
import configparser
import os
import sys
from pathlib import Path

KEYS = {"index-url", "extra-index-url", "no-index", "find-links", "trusted-host", "cert", "client-cert",
        "proxy", "timeout", "default-timeout", "retries"}
PATH_KEYS = {"cert", "client-cert", "find-links"}
files = [Path(d) / "pip" / "pip.conf" for d in os.environ.get("XDG_CONFIG_DIRS", "/etc/xdg").split(":") if d]
files += [Path("/etc/pip.conf"), Path.home() / ".pip" / "pip.conf", Path.home() / ".config" / "pip" / "pip.conf"]
if os.environ.get("PIP_CONFIG_FILE", os.devnull) != os.devnull:
    files.append(Path(os.environ["PIP_CONFIG_FILE"]))
merged = configparser.RawConfigParser()
for path in files:
    parsed = configparser.RawConfigParser()
    parsed.read(path)
    for section in parsed.sections():
        for key, value in parsed.items(section):
            if key in KEYS:
                merged.has_section(section) or merged.add_section(section)
                merged.set(section, key, value)
for name, value in os.environ.items():
    key = name.removeprefix("PIP_").lower().replace("_", "-")
    if name.startswith("PIP_") and key in KEYS:
        merged.has_section("global") or merged.add_section("global")
        merged.set("global", key, value)
if not any(merged.has_option(s, "cert") for s in merged.sections()):
    # Without a cert setting, pip's requests honours these variables: take the bundle they name.
    bundle = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE")
    if bundle:
        merged.has_section("global") or merged.add_section("global")
        merged.set("global", "cert", bundle)
mounts = set()
for section in merged.sections():
    for key in PATH_KEYS & set(merged.options(section)):
        kept = []
        for value in merged.get(section, key).split():
            if "://" in value:
                kept.append(value)
            elif os.path.isdir(value) and not any(os.scandir(value)):
                print(f"build-image: host pip setting {key} = {value} is an empty directory; left out",
                      file=sys.stderr)
            elif os.path.exists(value):
                kept.append(value)
                mounts.add(os.path.abspath(value))
            else:
                print(f"build-image: host pip setting {key} = {value} names no file; left out", file=sys.stderr)
        if kept:
            merged.set(section, key, " ".join(kept))
        else:
            merged.remove_option(section, key)
with open(sys.argv[1], "w") as out:
    merged.write(out)
print(*sorted(mounts), sep="\n")
EOF
chmod 644 "$work/pip.conf"
volumes=(-v "$work/pip.conf:/etc/pip.conf:ro")
while IFS= read -r path; do
    [[ -n $path ]] && volumes+=(-v "$path:$path:ro")
done <"$work/mounts"
log "pip settings for the build: $(grep -v '^$' "$work/pip.conf" | tr '\n' ' ')"

build_args=()
[[ -z $version ]] || build_args+=(--build-arg "VERSION=$version")
log "building $image from $repo/Dockerfile"
"${as_root[@]}" buildah bud --layers --pull=never --network host \
    "${volumes[@]}" "${build_args[@]}" \
    --tag "$image" --file "$repo/Dockerfile" "$repo" >&2
build_seconds=$((SECONDS - started - base_seconds))

partial="$output.partial"
rm -f "$partial"
"${as_root[@]}" buildah push --quiet "$image" "docker-archive:$partial:$image" >&2
mv -f "$partial" "$output"
image_id="$("${as_root[@]}" buildah inspect --type image --format '{{.FromImageID}}' "$image")"
log "$image ${image_id:0:12}: base ${base_seconds}s, build ${build_seconds}s," \
    "archive $((SECONDS - started - base_seconds - build_seconds))s, $(du -h "$output" | cut -f1) $output"
echo "$output"
