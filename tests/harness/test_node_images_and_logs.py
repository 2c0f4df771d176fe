"""The pieces of the e2e node that need no kubelet: OCI archives built here and the reader's log."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from localenv.images import BUSYBOX_IMAGE, busybox_layer, oci_archive
from localenv.node import Node
from localenv.token_reader import CONTAINER, digest, readings


@pytest.fixture
def busybox(tmp_path: Path) -> Path:
    """An executable that answers `--list` like busybox, so the layer builds without the real one."""
    path = tmp_path / "busybox"
    path.write_text("#!/bin/sh\nprintf 'busybox\\nsh\\nsleep\\nsha256sum\\n'\n")
    path.chmod(0o755)
    return path


def _members(archive: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def test_archive_is_an_oci_layout_that_names_its_image_for_containerd(busybox: Path) -> None:
    files = _members(oci_archive(BUSYBOX_IMAGE, busybox_layer(busybox), ("/bin/sh",)))

    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    for name, content in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(content).hexdigest() == name.rsplit("/", 1)[1]
    (descriptor,) = json.loads(files["index.json"])["manifests"]
    assert descriptor["annotations"]["io.containerd.image.name"] == BUSYBOX_IMAGE
    manifest = json.loads(files["blobs/" + descriptor["digest"].replace(":", "/")])
    config = json.loads(files["blobs/" + manifest["config"]["digest"].replace(":", "/")])
    (layer,) = manifest["layers"]
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]  # uncompressed: digest == diff_id
    assert config["config"]["Entrypoint"] == ["/bin/sh"]

    with tarfile.open(fileobj=io.BytesIO(files["blobs/" + layer["digest"].replace(":", "/")])) as tar:
        entries = {m.name: m for m in tar.getmembers()}
    assert entries["bin/busybox"].isfile()
    assert entries["bin/sh"].issym() and entries["bin/sh"].linkname == "busybox"
    assert "bin/sleep" in entries and "tmp" in entries


def test_archives_are_byte_for_byte_reproducible(busybox: Path) -> None:
    def build() -> bytes:
        return oci_archive(BUSYBOX_IMAGE, busybox_layer(busybox), ("/bin/sh",))

    assert build() == build()


def test_reader_log_gives_what_the_pod_held_and_when(tmp_path: Path) -> None:
    token = "header.payload.signature"
    sha = digest(token)
    log_dir = tmp_path / "pods" / f"ns_reader_1234/{CONTAINER}"
    log_dir.mkdir(parents=True)
    (log_dir / "0.log").write_text(
        f"2026-12-02T11:52:13.423869123Z stdout F read now=1 exp=1796212400 mounted={sha} "
        f"subpath={sha} env={sha}\n"
        "2026-12-02T11:52:14.000000001Z stdout P read now=2 exp=17962\n"
        "2026-12-02T11:52:14.5Z stderr F sha256sum: can't open '/var/run/simacan/token'\n"
    )
    node = Node("n", tmp_path, tmp_path / "pods", "10s", 0.0, {})

    (reading,) = readings(node.container_log("ns", "reader", CONTAINER))

    assert reading.at == pytest.approx(1796212333.423869)
    assert reading.exp == 1796212400
    assert reading.mounted == reading.subpath == reading.env == sha
