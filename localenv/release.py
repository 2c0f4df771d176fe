"""`scripts/release`: the files a user applies with `kubectl apply -f`, and the image they name.

The version is pyproject.toml's [project].version, nowhere else. Every file is `kubectl kustomize`
of a directory under manifests/ (or crds/), through a throwaway overlay that pins the image to that
version's tag, or to `tag@sha256:...` when `--digest` names what the registry stored on push. A
registry's digest exists only after the push (the push compresses the layers), so a local build
cannot know it: `--render-only` pins the tag, and the publisher re-renders with `--digest` once the
image is pushed (docs/release.md). Nothing in a file depends on the time, the machine or the
directory it was rendered in: two renders of one commit are byte-identical.

Without `--render-only` it first builds the image with localenv/build-image.sh (buildah; root or
sudo) and tags it as the release image, ready for `buildah push`. Only the standard library: the
render runs on any Python 3.11 with kubectl on PATH.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DIST = REPO / "dist"
IMAGE_REPOSITORY = "ghcr.io/simacan/simacan-token-operator"
COMPONENT_ROLLOUT_RESTARTS = "manifests/components/rollout-restarts"
CHECKSUMS = "SHA256SUMS"
DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
KUSTOMIZE_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class Piece:
    """One release file: what it renders and what its header tells the user."""

    file: str
    source: str
    about: str
    apply: str
    components: tuple[str, ...] = ()


INSTALL = "simacan-token-operator.yaml"
PIECES = (
    Piece(
        INSTALL,
        "manifests",
        "the cluster-wide install: CRDs, namespace, RBAC, Deployment, Service, NetworkPolicy",
        f"kubectl apply -f {INSTALL}",
    ),
    Piece(
        "simacan-token-operator-crds.yaml",
        "crds",
        "the CRDs alone, for a cluster admin to install once before the namespaced install",
        "kubectl apply -f simacan-token-operator-crds.yaml",
    ),
    Piece(
        "simacan-token-operator-namespaced.yaml",
        "manifests/namespaced",
        "the operator for one namespace, without cluster-wide RBAC (needs the CRDs installed)",
        "kubectl apply -n TEAM-NS -f simacan-token-operator-namespaced.yaml",
    ),
    Piece(
        "simacan-token-operator-rollout-restarts.yaml",
        "manifests",
        f"the cluster-wide install plus patch on Deployments, StatefulSets and DaemonSets "
        f"(spec.rolloutRestartTargets); apply it instead of {INSTALL}",
        "kubectl apply -f simacan-token-operator-rollout-restarts.yaml",
        (COMPONENT_ROLLOUT_RESTARTS,),
    ),
    Piece(
        "simacan-token-operator-namespaced-rollout-restarts.yaml",
        "manifests/namespaced",
        "the namespaced install plus patch on the namespace's workloads (spec.rolloutRestartTargets); "
        "apply it instead of simacan-token-operator-namespaced.yaml",
        "kubectl apply -n TEAM-NS -f simacan-token-operator-namespaced-rollout-restarts.yaml",
        (COMPONENT_ROLLOUT_RESTARTS,),
    ),
    Piece(
        "simacan-token-operator-monitoring.yaml",
        "manifests/monitoring",
        "alerts, scrape config and Grafana dashboard; needs the Prometheus Operator's CRDs",
        "kubectl apply -f simacan-token-operator-monitoring.yaml",
    ),
)


class ReleaseError(RuntimeError):
    """The release could not be rendered or built; the message says why."""


def project_version(repo: Path = REPO) -> str:
    """The one place the version is written."""
    version = tomllib.loads((repo / "pyproject.toml").read_text())["project"]["version"]
    if not isinstance(version, str) or not version:
        raise ReleaseError("pyproject.toml has no [project].version")
    return version


def image_reference(version: str, digest: str | None = None) -> str:
    """The image the release files name: the version's tag, and the registry's digest once known."""
    return f"{IMAGE_REPOSITORY}:{version}" + (f"@{digest}" if digest else "")


def render(output: Path, version: str, digest: str | None = None, repo: Path = REPO) -> list[Path]:
    """Write every piece and SHA256SUMS into `output`; returns the pieces' paths."""
    if digest is not None and not DIGEST.fullmatch(digest):
        raise ReleaseError(f"--digest must be sha256: and 64 lowercase hex digits, not {digest!r}")
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise ReleaseError("kubectl is needed to render the manifests (kubectl kustomize); put it on PATH")
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for piece in PIECES:
        body = _kustomize(kubectl, repo, piece, version, digest)
        path = output / piece.file
        path.write_text(_header(piece, version, digest, names_image=IMAGE_REPOSITORY in body) + body)
        written.append(path)
    sums = "".join(f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}\n" for p in written)
    (output / CHECKSUMS).write_text(sums)
    return written


def _header(piece: Piece, version: str, digest: str | None, names_image: bool) -> str:
    return (
        f"# simacan-token-operator {version}: {piece.about}.\n"
        f"#   {piece.apply}\n"
        + (f"# Image: {image_reference(version, digest)}\n" if names_image else "")
        + f"# Rendered by scripts/release from {piece.source}/"
        + "".join(f" with {component}/" for component in piece.components)
        + "; do not edit.\n"
    )


def _kustomize(kubectl: str, repo: Path, piece: Piece, version: str, digest: str | None) -> str:
    """`kubectl kustomize` of an overlay that only pins the image (kustomize wants relative paths)."""
    with tempfile.TemporaryDirectory(prefix="simacan-release-") as overlay:
        tag = version + (f"@{digest}" if digest else "")
        kustomization = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [os.path.relpath(repo / piece.source, overlay)],
            "components": [os.path.relpath(repo / c, overlay) for c in piece.components],
            "images": [{"name": IMAGE_REPOSITORY, "newTag": tag}],
        }
        Path(overlay, "kustomization.yaml").write_text(json.dumps(kustomization, indent=2) + "\n")
        result = subprocess.run(
            [kubectl, "kustomize", overlay],
            capture_output=True,
            text=True,
            timeout=KUSTOMIZE_TIMEOUT_SECONDS,
            check=False,
        )
    if result.returncode != 0 or not result.stdout.strip():
        raise ReleaseError(f"kubectl kustomize of {piece.source} failed:\n{result.stderr.strip()}")
    return result.stdout


def build_image(version: str, output: Path) -> Path:
    """Build the image from the Dockerfile with buildah as `<local repository>:<version>` (VERSION set),
    tag it as the release image for `buildah push`, and return the docker-archive written to `output`."""
    from localenv.images import ImageError
    from localenv.operator_image import build_operator_image, operator_image_reference

    try:
        archive = build_operator_image(version, version, output)
    except ImageError as error:
        raise ReleaseError(str(error)) from None
    as_root = [] if os.geteuid() == 0 else ["sudo"]
    tagged = subprocess.run(
        [*as_root, "buildah", "tag", operator_image_reference(version), image_reference(version)],
        capture_output=True,
        text=True,
        check=False,
    )
    if tagged.returncode != 0:
        raise ReleaseError(f"buildah tag failed: {tagged.stderr.strip()}")
    return archive


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="scripts/release",
        description="Build the operator image for pyproject.toml's version and write the release files.",
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="only write the release files (no image build: needs neither root nor buildah)",
    )
    parser.add_argument(
        "--digest",
        metavar="sha256:HEX",
        help="pin the image to this registry digest as well as the tag (the digest `buildah push "
        "--digestfile` reported)",
    )
    parser.add_argument(
        "--output", type=Path, default=DIST, metavar="DIR", help=f"where to write (default {DIST})"
    )
    options = parser.parse_args(argv)
    if options.digest is not None and not DIGEST.fullmatch(options.digest):
        parser.error(f"--digest must be sha256: and 64 lowercase hex digits, not {options.digest!r}")
    return options


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    version = project_version()
    output = options.output.resolve()
    try:
        if not options.render_only:
            archive = build_image(version, output)
            print(f"release: built {image_reference(version)} ({archive})", file=sys.stderr)
        written = render(output, version, options.digest)
    except ReleaseError as error:
        print(f"release: {error}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    print(output / CHECKSUMS)
    print(f"release: {version}, image {image_reference(version, options.digest)}", file=sys.stderr)
    if not options.render_only:
        print(
            f"release: to publish, push the image and pin what the registry stored:\n"
            f"  sudo buildah push --digestfile {output}/image-digest {image_reference(version)}\n"
            f'  scripts/release --render-only --digest "$(cat {output}/image-digest)"',
            file=sys.stderr,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
