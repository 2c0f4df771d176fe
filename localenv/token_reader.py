"""A workload that reports, once a second, which token it sees through each way of consuming a Secret.

The e2e test and `benchmarks/kubelet_delay.py` run it on the node from `localenv.node`. One container
reads the same Secret three ways: the whole Secret mounted as a volume (kubelet replaces the files
when the Secret changes), the `token` key mounted alone with `subPath`, and the key as an environment
variable. Each line names the token by its SHA-256 (never the token itself) and gives the `exp` the
workload decodes from the mounted JWT with busybox, so a reader of the log knows what it held and when.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from localenv.images import BUSYBOX_IMAGE
from localenv.node import LogLine

CONTAINER = "reader"
MOUNT_DIR = "/var/run/simacan"
SUBPATH_FILE = "/var/run/simacan-subpath/token"
TOKEN_KEY = "token"

# busybox sh: base64url -> base64 with padding, decode the JWT payload, pick out the exp claim.
# The mounted token is copied once per line and both its exp and its digest come from the copy: read
# twice, kubelet's swap can land between the reads and pair one token's digest with the other's exp.
SCRIPT = f"""
exp_of() {{
  p=$(cut -d. -f2 "$1" | tr '_-' '/+')
  case $(( ${{#p}} % 4 )) in 2) p="$p==" ;; 3) p="$p=" ;; esac
  echo "$p" | base64 -d 2>/dev/null | sed -n 's/.*"exp": *\\([0-9][0-9]*\\).*/\\1/p'
}}
while true; do
  cp {MOUNT_DIR}/{TOKEN_KEY} /tmp/mounted
  echo "read now=$(date +%s) exp=$(exp_of /tmp/mounted)" \\
    "mounted=$(sha256sum /tmp/mounted | cut -d' ' -f1)" \\
    "subpath=$(sha256sum {SUBPATH_FILE} | cut -d' ' -f1)" \\
    "env=$(printf %s "$TOKEN" | sha256sum | cut -d' ' -f1)"
  sleep 1
done
"""


@dataclass(frozen=True)
class Reading:
    """What the workload held at one moment: token digests per access path and the mounted token's exp."""

    at: float  # Unix time, stamped by containerd as the line arrived
    exp: int | None
    mounted: str
    subpath: str
    env: str


def digest(token: str) -> str:
    """How the workload names a token in its log."""
    return hashlib.sha256(token.encode()).hexdigest()


def pod_manifest(name: str, secret_name: str, node_name: str) -> dict[str, Any]:
    """The reader pod, bound to the node directly (no scheduler) on the host network (no CNI)."""
    secret_volume = {"name": "token", "secret": {"secretName": secret_name}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node_name,
            "hostNetwork": True,
            "automountServiceAccountToken": False,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": CONTAINER,
                    "image": BUSYBOX_IMAGE,
                    "imagePullPolicy": "Never",
                    "command": ["/bin/sh", "-c", SCRIPT],
                    "env": [
                        {
                            "name": "TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": secret_name, "key": TOKEN_KEY}},
                        }
                    ],
                    "volumeMounts": [
                        {"name": "token", "mountPath": MOUNT_DIR, "readOnly": True},
                        {"name": "token", "mountPath": SUBPATH_FILE, "subPath": TOKEN_KEY, "readOnly": True},
                    ],
                }
            ],
            "volumes": [secret_volume],
        },
    }


def readings(lines: list[LogLine]) -> list[Reading]:
    """The reader's log lines, parsed; anything else the container printed is ignored."""
    parsed: list[Reading] = []
    for line in lines:
        if not line.text.startswith("read "):
            continue
        fields = dict(part.partition("=")[::2] for part in line.text.split()[1:])
        exp = fields.get("exp", "")
        parsed.append(
            Reading(
                at=line.at.timestamp(),
                exp=int(exp) if exp.isdigit() else None,
                mounted=fields.get("mounted", ""),
                subpath=fields.get("subpath", ""),
                env=fields.get("env", ""),
            )
        )
    return parsed
