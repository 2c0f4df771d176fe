"""The operator's own container image, built here from the unchanged Dockerfile for the e2e node.

`localenv/build-image.sh` does the work (buildah, a local stand-in for the base image, no registry); this
module only runs it, so tests get the archive path back or an `ImageError` that shows why the build failed.
The archive is a docker-archive that `ctr images import` names `OPERATOR_IMAGE_REPOSITORY:<tag>`.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from localenv.images import ImageError

OPERATOR_IMAGE_REPOSITORY = "simacan.local/simacan-token-operator"
BUILD_IMAGE_SCRIPT = Path(__file__).resolve().with_name("build-image.sh")
# A cold build (debootstrap of the base image, then every pip install) takes a few minutes here.
BUILD_TIMEOUT_SECONDS = 1800.0
ERROR_TAIL_LINES = 40


def operator_image_reference(tag: str) -> str:
    """The name kubelet pulls (`imagePullPolicy: IfNotPresent` finds it imported)."""
    return f"{OPERATOR_IMAGE_REPOSITORY}:{tag}"


def build_operator_image(
    tag: str, version: str, output_dir: Path, timeout: float = BUILD_TIMEOUT_SECONDS
) -> Path:
    """Build the image as `operator_image_reference(tag)` with the Dockerfile's VERSION set to `version`.

    Returns the archive for `ctr images import`, written into `output_dir` next to the build's log.
    Layers are cached in buildah's storage, so building an unchanged tree again takes seconds.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    archive = (output_dir / f"simacan-token-operator-{tag}.docker-archive.tar").resolve()
    log_path = output_dir / f"build-image-{tag}.log"
    argv = ["bash", str(BUILD_IMAGE_SCRIPT), "--tag", tag, "--version", version, "--output", str(archive)]
    with log_path.open("w") as log:
        try:
            result = subprocess.run(
                argv, stdout=subprocess.PIPE, stderr=log, text=True, timeout=timeout, check=False
            )
        except subprocess.TimeoutExpired as error:
            message = f"{BUILD_IMAGE_SCRIPT.name} timed out after {timeout:.0f}s; log: {log_path}"
            raise ImageError(f"{message}\n{_tail(log_path)}") from error
    if result.returncode != 0:
        raise ImageError(
            f"{BUILD_IMAGE_SCRIPT.name} --tag {tag} exited with {result.returncode}; log: {log_path}\n"
            f"{_tail(log_path)}"
        )
    printed = result.stdout.strip().splitlines()
    if not printed or Path(printed[-1]) != archive or not archive.is_file():
        raise ImageError(f"{BUILD_IMAGE_SCRIPT.name} printed {printed[-1:]}, expected the archive {archive}")
    return archive


def _tail(path: Path, lines: int = ERROR_TAIL_LINES) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
