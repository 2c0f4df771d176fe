"""Kill the operator at an exact step of a refresh, from outside it: an admission webhook.

The API server asks this webhook before it stores a token Secret write or a status patch.
When armed for that step, the webhook SIGKILLs the operator and only then answers (with a
denial), so the write it was asked about never lands: the process dies after every step
before it and before that one, deterministically, with no hook inside the operator.

- "secret-write": the Auth API has answered (the operator is writing its token), the Secret
  write is refused: a crash between the Auth API's answer and the Secret write.
- "status-patch": the Secret holds the new token, the status patch is refused: a crash
  between the Secret write and the status patch.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import json
import os
import signal
import ssl
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, Literal

from kubernetes import client

from localenv.loopback import serving
from localenv.pki import write_serving_certificate

Point = Literal["secret-write", "status-patch"]
MANAGED_BY = {"app.kubernetes.io/managed-by": "simacan-token-operator"}


@dataclass
class CrashHook:
    namespace: str
    armed: Point | None = None
    victim: int | None = None
    """The pid to SIGKILL when the armed step comes."""
    fired: list[tuple[Point, str]] = field(default_factory=list)
    """(point, object name) of each kill."""
    seen: int = 0
    """Admission reviews received (armed or not)."""
    log: list[tuple[float, Point, str, str]] = field(default_factory=list)
    """(time, step, operation, object name) of every review, for the report of a failure."""
    _secret_written: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def arm(self, point: Point, pid: int) -> None:
        """Kill `pid` at the next token Secret write ("secret-write") or at the first status patch
        after a token Secret write ("status-patch"): the two halves of one refresh."""
        with self._lock:
            self.armed, self.victim, self._secret_written = point, pid, False

    def decide(self, review: dict[str, Any]) -> tuple[bool, str]:
        self.count()
        request = review["request"]
        point: Point = "status-patch" if request.get("subResource") == "status" else "secret-write"
        with self._lock:
            self.log.append((time.time(), point, str(request.get("operation")), str(request.get("name"))))
            if self.armed is None or self.victim is None or request.get("dryRun"):
                return True, ""
            if self.armed == "status-patch" and point == "secret-write":
                self._secret_written = True  # the refresh's Secret write: the status patch follows
                return True, ""
            if self.armed != point or (point == "status-patch" and not self._secret_written):
                return True, ""
            victim, self.armed, self.victim = self.victim, None, None
            self.fired.append((point, str(request.get("name"))))
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
        _wait_dead(victim)
        return False, f"crash test: operator killed before this {point}"

    def count(self) -> None:
        with self._lock:
            self.seen += 1


def _wait_dead(pid: int, timeout: float = 5.0) -> None:
    """Until the kernel has ended the process (a zombie or gone): it runs no more code."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.001)


class _Handler(BaseHTTPRequestHandler):
    hook: CrashHook

    def do_POST(self) -> None:
        review = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        allowed, message = self.hook.decide(review)
        body = json.dumps(
            {
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "response": {
                    "uid": review["request"]["uid"],
                    "allowed": allowed,
                    **({} if allowed else {"status": {"code": 503, "message": message}}),
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def crash_hook(api: client.ApiClient, namespace: str, work_dir: Path) -> Iterator[CrashHook]:
    """Serve the webhook on loopback and register it for `namespace` only; removed on exit."""
    tls = write_serving_certificate(
        work_dir / "crashhook-pki",
        ca_name="crashhook-ca",
        common_name="crashhook",
        dns_names=("localhost",),
        ip_addresses=("127.0.0.1",),
        validity=datetime.timedelta(hours=2),
    )
    hook = CrashHook(namespace)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls.cert_file, tls.key_file)
    with serving(type("_BoundHandler", (_Handler,), {"hook": hook}), tls=context) as base_url:
        yield from _registered(api, namespace, hook, base_url + "/", tls.ca_file.read_bytes())


def _registered(
    api: client.ApiClient, namespace: str, hook: CrashHook, url: str, ca: bytes
) -> Iterator[CrashHook]:
    """Register the webhook at `url` for `namespace`; yields once the API server calls it."""
    ca_bundle = base64.b64encode(ca).decode()
    name = f"crashhook-{namespace}"
    scope = {"matchLabels": {"kubernetes.io/metadata.name": namespace}}

    def webhook(suffix: str, rule: dict[str, Any], object_selector: dict[str, Any]) -> dict[str, Any]:
        return {
            "name": f"{suffix}.crashhook.test",
            "clientConfig": {"url": url + suffix, "caBundle": ca_bundle},
            "rules": [rule],
            "namespaceSelector": scope,
            "objectSelector": object_selector,
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "timeoutSeconds": 10,
        }

    body: Any = {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingWebhookConfiguration",
        "metadata": {"name": name},
        "webhooks": [
            webhook(
                "secret",
                {
                    "apiGroups": [""],
                    "apiVersions": ["v1"],
                    "operations": ["CREATE", "UPDATE"],
                    "resources": ["secrets"],
                },
                {"matchLabels": MANAGED_BY},
            ),
            webhook(
                "status",
                {
                    "apiGroups": ["auth.simacan.com"],
                    "apiVersions": ["*"],
                    "operations": ["UPDATE"],
                    "resources": ["simacancredentials/status"],
                },
                {},
            ),
        ],
    }
    admission = client.AdmissionregistrationV1Api(api)
    admission.create_validating_webhook_configuration(body)
    try:
        _wait_active(api, namespace, hook)
        yield hook
    finally:
        with contextlib.suppress(client.exceptions.ApiException):
            admission.delete_validating_webhook_configuration(name)


def _wait_active(api: client.ApiClient, namespace: str, hook: CrashHook, timeout: float = 30.0) -> None:
    """The API server picks up a new webhook within a moment: probe with dry-run writes until it asks."""
    core = client.CoreV1Api(api)
    probe: Any = {"metadata": {"name": "crashhook-probe", "labels": MANAGED_BY}, "type": "Opaque"}
    deadline = time.monotonic() + timeout
    while hook.seen == 0:
        if time.monotonic() > deadline:
            raise TimeoutError("the API server never called the crash webhook")
        core.create_namespaced_secret(namespace, probe, dry_run="All")
        time.sleep(0.2)
