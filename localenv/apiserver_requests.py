"""Requests a client makes of the API server, counted by kube-apiserver itself.

`apiserver_request_total` on the API server's /metrics (read as admin): nothing a contender reports
about itself is trusted. The measurement (issue 22, "two requests per refresh"): the increase over a
window of every request, all verbs and codes, for the resources below; per 2xx POST + PUT + PATCH
on secrets (the token Secret writes; kube-apiserver counts a server-side apply PATCH as APPLY).

The resources are the ones issue 22 names (secrets, simacancredentials with /status, events,
leases, deployments, statefulsets, daemonsets, namespaces), as the operator's own
`simacan_kube_requests_total` counts them, plus External Secrets Operator's (externalsecrets, its
generators), so that each contender pays for the objects it drives.

Used by `python -m benchmarks.compare` (every contender) and `python -m benchmarks.api_traffic`
(ours, also with one credential per namespace); here so that tests can check the arithmetic.
"""

from __future__ import annotations

import re
import ssl
import time
from collections import Counter
from collections.abc import Mapping

import httpx

from localenv.controlplane import ControlPlane
from simacan_token_operator.kube import metered

RESOURCES = metered.RESOURCES | {"externalsecrets", "webhooks", "generatorstates"}
WRITE_VERBS = frozenset({"POST", "PUT", "PATCH", "APPLY"})  # a server-side apply is a PATCH, counted as APPLY
SETTLE_AFTER_LAST_SECRET = 5.0  # the window starts this long after the last token Secret exists
WINDOW_LIFETIMES = 4  # and lasts this many token lifetimes
MAX_REQUESTS_PER_WRITE = 2.2  # issue 22's targets for ours
MAX_SECRET_GETS_PER_WRITE = 0.1
SAMPLE = re.compile(r"^apiserver_request_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

Key = tuple[str, str, str]
"""(verb, resource[/subresource], code)."""


def parse_request_counts(metrics: str) -> Counter[Key]:
    """apiserver_request_total for the resources that count, by verb, resource and code, summed over
    the other labels (group, version, scope, component, dry_run)."""
    counts: Counter[Key] = Counter()
    for line in metrics.splitlines():
        match = SAMPLE.match(line)
        if match is None:
            continue
        labels = dict(LABEL.findall(match.group("labels")))
        resource = labels.get("resource", "")
        if resource not in RESOURCES:
            continue
        sub = labels.get("subresource", "")
        key = (labels.get("verb", ""), f"{resource}/{sub}" if sub else resource, labels.get("code", ""))
        counts[key] += round(float(match.group("value")))
    return counts


def request_counts(plane: ControlPlane) -> Counter[Key]:
    """The counters now, from the API server's /metrics."""
    response = httpx.get(
        f"{plane.server}/metrics",
        headers={"Authorization": f"Bearer {plane.admin_token}"},
        verify=ssl.create_default_context(cafile=str(plane.ca_file)),
        timeout=30,
    )
    response.raise_for_status()
    return parse_request_counts(response.text)


def wait_until_collected(plane: ControlPlane, resource: str, timeout: float = 120.0) -> float:
    """Until kube-controller-manager's garbage collector has listed `resource`; the seconds waited.

    Call it after installing a CRD, before the contender starts (nothing else may have listed
    `resource` yet). The collector finds new CRDs every 30 s. Until then, every owner a new Secret
    names is a "virtual" node in its graph, which it polls with a GET (with backoff) until its
    informer sees the object: up to 0.17 GETs of the owners per Secret write in the counting
    window, which a cluster where the CRD has long been installed never makes."""
    started = time.monotonic()
    while not any(verb == "LIST" and res == resource for (verb, res, _) in request_counts(plane)):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"kube-controller-manager's garbage collector did not list {resource}")
        time.sleep(1.0)
    return time.monotonic() - started


def increase(before: Mapping[Key, int], after: Mapping[Key, int]) -> Counter[Key]:
    grown = {key: after[key] - before.get(key, 0) for key in after}
    return Counter({key: n for key, n in grown.items() if n > 0})


def secret_writes(counts: Mapping[Key, int]) -> int:
    return sum(
        n
        for (verb, res, code), n in counts.items()
        if res == "secrets" and verb in WRITE_VERBS and code[:1] == "2"
    )


def secret_gets(counts: Mapping[Key, int]) -> int:
    return sum(n for (verb, res, _), n in counts.items() if res == "secrets" and verb == "GET")


def per_write_rows(counts: Mapping[Key, int]) -> dict[str, float]:
    """Requests per Secret write by "VERB resource", 2xx codes merged; other codes kept apart
    ("PUT secrets 409"), as a conflict or a throttled request is worth seeing."""
    writes = secret_writes(counts)
    rows: Counter[str] = Counter()
    for (verb, resource, code), n in counts.items():
        rows[f"{verb} {resource}" + ("" if code[:1] == "2" else f" {code}")] += n
    return {row: n / writes if writes else float("inf") for row, n in sorted(rows.items())}


def to_json(counts: Mapping[Key, int]) -> dict[str, int]:
    return {" ".join(key): n for key, n in sorted(counts.items())}


def from_json(document: Mapping[str, int]) -> Counter[Key]:
    counts: Counter[Key] = Counter()
    for key, n in document.items():
        verb, resource, code = key.split(" ")
        counts[(verb, resource, code)] = n
    return counts
