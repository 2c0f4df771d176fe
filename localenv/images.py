"""Container images built here from Debian's static busybox, as OCI archives containerd can import.

The e2e node must run pods without a registry: an image is a layer tar with `/bin/busybox` and a
link per applet, a config, a manifest and an `index.json` whose manifest carries the
`io.containerd.image.name` annotation that `ctr images import` names the image by. The same layer
with an entrypoint that only sleeps serves as the pod sandbox ("pause") image. Archives are
byte-for-byte reproducible, so importing one twice changes nothing.
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUSYBOX = Path("/bin/busybox")
BUSYBOX_IMAGE = "simacan.local/busybox:e2e"
PAUSE_IMAGE = "simacan.local/pause:e2e"
PAUSE_ENTRYPOINT = ("/bin/sleep", "2147483647")
DIRECTORIES = ("bin", "dev", "etc", "proc", "sys", "tmp", "var", "var/run")

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar"


class ImageError(RuntimeError):
    """An image could not be built."""


@dataclass(frozen=True)
class Blob:
    media_type: str
    content: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.content).hexdigest()

    def descriptor(self, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        described: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": len(self.content),
        }
        if annotations:
            described["annotations"] = annotations
        return described


def busybox_layer(busybox: Path = BUSYBOX) -> Blob:
    """An uncompressed layer: the static busybox and a symlink per applet it lists."""
    if not busybox.is_file():
        raise ImageError(f"{busybox} is missing; install Debian's busybox-static (localenv/install-deps.sh)")
    applets = _applets(busybox)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as layer:
        for directory in DIRECTORIES:
            layer.addfile(_entry(directory, tarfile.DIRTYPE, 0o755))
        binary = busybox.read_bytes()
        entry = _entry("bin/busybox", tarfile.REGTYPE, 0o755)
        entry.size = len(binary)
        layer.addfile(entry, io.BytesIO(binary))
        for applet in applets:
            if applet == "busybox":
                continue
            link = _entry(f"bin/{applet}", tarfile.SYMTYPE, 0o777)
            link.linkname = "busybox"
            layer.addfile(link)
    return Blob(LAYER_MEDIA_TYPE, buffer.getvalue())


def oci_archive(name: str, layer: Blob, entrypoint: Sequence[str]) -> bytes:
    """A tar of an OCI image layout holding one image named `name` (as `ctr images import` reads it)."""
    config = _json_blob(
        CONFIG_MEDIA_TYPE,
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Entrypoint": list(entrypoint), "Env": ["PATH=/bin"], "WorkingDir": "/"},
            "rootfs": {"type": "layers", "diff_ids": [layer.digest]},
        },
    )
    manifest = _json_blob(
        MANIFEST_MEDIA_TYPE,
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": config.descriptor(),
            "layers": [layer.descriptor()],
        },
    )
    index = {
        "schemaVersion": 2,
        "manifests": [
            manifest.descriptor(
                {
                    "io.containerd.image.name": name,
                    "org.opencontainers.image.ref.name": name.rpartition(":")[2],
                }
            )
        ],
    }
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        _add_file(archive, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add_file(archive, "index.json", json.dumps(index, sort_keys=True).encode())
        for blob in (layer, config, manifest):
            _add_file(archive, "blobs/sha256/" + blob.digest.removeprefix("sha256:"), blob.content)
    return buffer.getvalue()


def write_node_images(directory: Path, busybox: Path = BUSYBOX) -> dict[str, Path]:
    """Write the busybox and pause archives into `directory`; returns image name -> archive path."""
    directory.mkdir(parents=True, exist_ok=True)
    layer = busybox_layer(busybox)
    archives = {
        BUSYBOX_IMAGE: oci_archive(BUSYBOX_IMAGE, layer, ("/bin/sh",)),
        PAUSE_IMAGE: oci_archive(PAUSE_IMAGE, layer, PAUSE_ENTRYPOINT),
    }
    paths: dict[str, Path] = {}
    for name, content in archives.items():
        path = directory / (name.rpartition("/")[2].replace(":", "-") + ".oci.tar")
        path.write_bytes(content)
        paths[name] = path
    return paths


def _applets(busybox: Path) -> list[str]:
    listed = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=False)
    if listed.returncode != 0 or not listed.stdout.strip():
        raise ImageError(f"{busybox} --list failed: {listed.stderr.strip()}")
    return sorted(set(listed.stdout.split()))


def _json_blob(media_type: str, document: dict[str, Any]) -> Blob:
    return Blob(media_type, json.dumps(document, sort_keys=True, separators=(",", ":")).encode())


def _entry(name: str, kind: bytes, mode: int) -> tarfile.TarInfo:
    """Owned by root, dated at the epoch: the same input always gives the same digest."""
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def _add_file(archive: tarfile.TarFile, name: str, content: bytes) -> None:
    entry = _entry(name, tarfile.REGTYPE, 0o644)
    entry.size = len(content)
    archive.addfile(entry, io.BytesIO(content))
