"""The three attacks of issue 19 on one operator, and the objects they are made of.

Shared by tests/e2e/test_tenant_bounds.py, which asserts on the figures, and
benchmarks/tenant_bounds.py, which prints them; the arena they run in is tenant_arena.py.
The sizes the attacks go up to are the constants below: the CRD bounds follow
crds/simacancredentials.auth.simacan.com.yaml and must change with it.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jwt
from kubernetes import client

from localenv.k8s import GROUP, PLURAL, VERSION, Namespace
from localenv.scenarios.faultkit import PASSWORD, USERNAME, credential_spec
from localenv.scenarios.tenant_arena import (
    KIB,
    LOGIN,
    MIB,
    PARALLEL_CREATES,
    Arena,
    Attack,
    Figures,
)
from simacan_token_operator.kube.client import RawApi
from simacan_token_operator.model import reasons

# --- the attacks ----------------------------------------------------------------------------------
BOMB_TOKEN_BYTES = 40 * KIB
DEPLOYMENTS = 60
DEPLOYMENT_BYTES = 1 * MIB
DEPLOYMENT_ANNOTATION_BYTES = 192 * KIB
"""Of each Deployment's bytes, this many in metadata.annotations (the rest in env values): a
metadata-only list still carries annotations."""
CREDENTIALS = 50
METADATA_ANNOTATION_BYTES = 256 * KIB - 512
"""On each of the CREDENTIALS: just under the API server's 256 KiB limit on all annotations."""
OVERSIZED_REFRESH_REQUEST_BYTES = 64 * KIB
"""Every other one of the CREDENTIALS asks for a refresh with a value this long (finding c)."""

# --- CRD bounds: adjust with the CRD --------------------------------------------------------------
NAME_MAX = 253
LABELS_MAX = 32
QUALIFIED_PREFIX_MAX = 253
QUALIFIED_NAME_MAX = 63
LABEL_VALUE_MAX = 63
ANNOTATIONS_MAX = 32
ANNOTATION_VALUE_MAX = 4096
DATA_KEYS_MAX = 16
DATA_KEY_MAX = 253
DATA_VALUE_MAX = 4096
RENDERED_DATA_MAX = 64 * KIB
"""The token Secret's data at worst, every {{ .token }} counted as a token of TOKEN_MAX."""
TOKEN_MAX = 8 * KIB
STANDARD_DATA_MAX = TOKEN_MAX + len("Bearer") + len("2030-01-01T00:00:00Z")
"""The keys token, token_type and expires_at at their longest."""
RESTART_TARGETS_MAX = 32
RESTART_TARGET_NAME_MAX = 253
DURATION_MAX = 32
REFRESH_REQUEST_MAX = 64

# --- what the fixes say -----------------------------------------------------------------------------
RENDER_BOUND_WORDS = re.compile(r"64 ?Ki|65,?536")
"""The InvalidSpec Event of the template bomb must name the rendered-data bound."""
REFRESH_REQUEST_WARNING_WORDS = "refresh-requested-at"
"""An oversized refresh request is ignored with a Warning Event that names the annotation."""
STATUS_MAX_BYTES = 24 * KIB
"""A status as JSON: conditions <= 1 KiB each, staleConsumers <= 20, restarts <= RESTART_TARGETS_MAX."""

KNOWN_REASONS = frozenset(
    value for key, value in vars(reasons).items() if key.isupper() and isinstance(value, str)
)
PLACEHOLDER = "{{ .token }}"
TABLE = "application/json;as=Table;g=meta.k8s.io;v=v1"


# --- object builders ------------------------------------------------------------------------------


def dns_subdomain(length: int, tag: str) -> str:
    """A DNS-1123 subdomain of exactly `length` characters starting with `tag` (labels of <= 63)."""
    chars = list((tag + "x" * length)[:length])
    for index in range(63, length, 64):
        chars[index] = "."
    if chars[-1] == ".":
        chars[-2:] = ["x", "x"]
    text = "".join(chars)
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*", text), text
    return text


def qualified_name(tag: str) -> str:
    """A label or annotation key at its longest: a 253-character prefix, '/', a 63-character name."""
    return (
        f"{dns_subdomain(QUALIFIED_PREFIX_MAX, tag)}/{(tag + 'n' * QUALIFIED_NAME_MAX)[:QUALIFIED_NAME_MAX]}"
    )


def padded_duration(base: str, length: int) -> str:
    """`base` followed by zero parts ("0s", "0ms") up to exactly `length` characters."""
    pad = length - len(base)
    text = base + ("0ms" if pad % 2 else "") + "0s" * ((pad - 3) // 2 if pad % 2 else pad // 2)
    assert len(text) == length and re.fullmatch(r"([0-9]+(\.[0-9]+)?(h|m|s|ms))+", text), text
    return text


def bomb_templates() -> dict[str, str]:
    """16 data templates of 4,096 characters, each as many {{ .token }} as fit: they pass the CRD."""
    value = PLACEHOLDER * (DATA_VALUE_MAX // len(PLACEHOLDER))
    value += "x" * (DATA_VALUE_MAX - len(value))
    return {f"bomb-{index:02d}": value for index in range(DATA_KEYS_MAX)}


def self_made_token(issued: str, size: int) -> str:
    """The tenant's own JWT of about `size` characters: the claims of the token it was issued (so
    exp and the Secret's annotations agree) plus ballast, signed with a key of its own."""
    claims = jwt.decode(issued, options={"verify_signature": False})
    key = secrets.token_bytes(32)
    claims["ballast"] = ""
    bare = len(jwt.encode(claims, key, algorithm="HS256"))
    claims["ballast"] = secrets.token_urlsafe(size)[: (size - bare) * 3 // 4]
    return jwt.encode(claims, key, algorithm="HS256")


def fat_deployment(index: int, secret: str) -> dict[str, Any]:
    """~DEPLOYMENT_BYTES, replicas 0, reading `secret` through an env var (a stale consumer)."""
    name = f"fat-{index:02d}"
    chunk = 60 * KIB
    annotations = {
        f"ballast.tenant.example/{part}": "a" * min(chunk, DEPLOYMENT_ANNOTATION_BYTES - part * chunk)
        for part in range(-(-DEPLOYMENT_ANNOTATION_BYTES // chunk))
    }
    env_bytes = DEPLOYMENT_BYTES - DEPLOYMENT_ANNOTATION_BYTES
    env: list[dict[str, Any]] = [
        {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": secret, "key": "token"}}},
        *(
            {"name": f"BALLAST_{part}", "value": "e" * min(chunk, env_bytes - part * chunk)}
            for part in range(-(-env_bytes // chunk))
        ),
    ]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.invalid/app:1", "env": env}]},
            },
        },
    }


USERNAME_KEY = "u" * DATA_KEY_MAX
PASSWORD_KEY = "p" * DATA_KEY_MAX


def bounded_data(at_render_bound: bool) -> dict[str, str]:
    """DATA_KEYS_MAX templates with keys of DATA_KEY_MAX characters, without placeholders: together
    exactly at the rendered-data bound (served), or each at DATA_VALUE_MAX (over it: refused)."""
    if not at_render_bound:
        return {f"d{j:02d}".ljust(DATA_KEY_MAX, "k"): "x" * DATA_VALUE_MAX for j in range(DATA_KEYS_MAX)}
    room = RENDERED_DATA_MAX - STANDARD_DATA_MAX
    sizes = [room // DATA_KEYS_MAX] * DATA_KEYS_MAX
    sizes[0] += room - sum(sizes)
    return {f"d{j:02d}".ljust(DATA_KEY_MAX, "k"): "x" * size for j, size in enumerate(sizes)}


def bounded_credential(index: int, auth_url: str, login: str) -> dict[str, Any]:
    """Every bounded field at its bound, plus just under 256 KiB of metadata annotations.

    Index modulo 4: 0 and 1 have data templates exactly at the rendered-data bound, 2 and 3 each
    template at its own bound (which together break the rendered-data bound); odd ones carry an
    oversized refresh request."""
    request_key = f"{GROUP}/refresh-requested-at"
    request = (
        "r" * OVERSIZED_REFRESH_REQUEST_BYTES if index % 2 else f"2030-01-01T00:00:00Z-{index:02d}-"
    ).ljust(REFRESH_REQUEST_MAX, "r")
    annotations = {request_key: request}
    room = METADATA_ANNOTATION_BYTES - len(request_key) - len(request)
    part = 0
    while room > 0:
        key = f"ballast.tenant.example/{part}"
        annotations[key] = "m" * min(64 * KIB, room - len(key))
        room -= len(key) + len(annotations[key])
        part += 1
    template = {
        "labels": {qualified_name(f"l{j:02d}"): "v" * LABEL_VALUE_MAX for j in range(LABELS_MAX)},
        "annotations": {
            qualified_name(f"a{j:02d}"): "a" * ANNOTATION_VALUE_MAX for j in range(ANNOTATIONS_MAX)
        },
        "data": bounded_data(at_render_bound=index % 4 < 2),
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "SimacanCredential",
        "metadata": {"name": f"bounded-{index:02d}", "annotations": annotations},
        "spec": {
            "credentialsSecretRef": {"name": login, "usernameKey": USERNAME_KEY, "passwordKey": PASSWORD_KEY},
            "authURL": auth_url,
            "secretName": dns_subdomain(NAME_MAX, f"s{index:02d}"),
            "secretTemplate": template,
            "rolloutRestartTargets": [
                {"kind": "Deployment", "name": dns_subdomain(RESTART_TARGET_NAME_MAX, f"t{j:02d}")}
                for j in range(RESTART_TARGETS_MAX)
            ],
            "minRestartInterval": padded_duration("1h", DURATION_MAX),
            "refreshBefore": padded_duration("5m", DURATION_MAX),
            "suspend": False,
        },
    }


def in_parallel(calls: Sequence[Callable[[], object]]) -> float:
    """Creating the objects is not what is measured: do it as fast as the API server takes it.
    Returns the seconds it took."""
    started = time.monotonic()
    with ThreadPoolExecutor(PARALLEL_CREATES) as pool:
        for future in [pool.submit(call) for call in calls]:
            future.result()
    return time.monotonic() - started


# --- reading what the operator said -----------------------------------------------------------------


def condition(credential: Mapping[str, Any], kind: str) -> dict[str, Any] | None:
    for found in (credential.get("status") or {}).get("conditions") or []:
        if found.get("type") == kind:
            return dict(found)
    return None


def ready_table(ns: Namespace) -> dict[str, tuple[str, str]]:
    """Ready status and reason of every credential, from the CRD's printer columns: without
    reading the (large) objects on every poll."""
    path = f"/apis/{GROUP}/{VERSION}/namespaces/{ns.name}/{PLURAL}"
    table = RawApi(ns.api).json("GET", path, accept=TABLE, query={"includeObject": "None"})
    columns = [column["name"] for column in table["columnDefinitions"]]
    ready, reason = columns.index("Ready"), columns.index("Reason")
    return {row["cells"][0]: (row["cells"][ready] or "", row["cells"][reason] or "") for row in table["rows"]}


def warnings(ns: Namespace, name: str) -> list[dict[str, Any]]:
    return [event for event in ns.events(name) if event.get("type") == "Warning"]


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:12]


# --- the attacks ----------------------------------------------------------------------------------


def template_bomb(arena: Arena) -> Figures:
    """A 40 KiB self-made JWT in the tenant's own token Secret, then data templates that pass the
    CRD but render to far more than the bound. The operator must say InvalidSpec, naming the bound."""
    arena.ensure_operator()  # the tenant's first token comes from the operator
    ns = arena.namespace("bomb")
    name = "bomb"
    try:
        ns.create_login_secret(LOGIN, USERNAME, PASSWORD)
        ns.create_credential(name, credential_spec(arena.tenant_auth))
        issued = ns.ready_token(name)
        with arena.measuring("template bomb") as attack:
            bomb = self_made_token(issued, BOMB_TOKEN_BYTES)
            attack.figures.notes.append(f"self-made token {len(bomb) / KIB:.0f} KiB")
            ns.set_secret_data(name, token=bomb)  # annotations kept: it looks like the operator's own

            def fate() -> str | None:
                status = ns.credential(name).get("status") or {}
                if status.get("tokenFingerprint") == _fingerprint(bomb):
                    return "adopted"
                return "rewritten" if ns.secret_text(name, "token") != bomb else None

            if attack.wait_until(fate, "the operator reading the self-made token back", 15, acted_on=False):
                attack.figures.notes.append(f"self-made token {fate()} by the operator")
            attack.started = time.monotonic()  # "acted on after" counts from the templates
            ns.patch_credential(name, {"spec": {"secretTemplate": {"data": bomb_templates()}}})
            placeholders = DATA_KEYS_MAX * (DATA_VALUE_MAX // len(PLACEHOLDER))
            attack.figures.notes.append(f"{placeholders} placeholders")
            attack.wait_until(
                lambda: (ns.ready_reason(name) or ("", ""))[1] == reasons.INVALID_SPEC,
                "Ready reason InvalidSpec",
            )
            attack.figures.reason = _ready_text(ns, name)
            attack.expect(
                ns.ready_reason(name) == ("False", reasons.INVALID_SPEC),
                f"Ready is {attack.figures.reason}, not False InvalidSpec",
            )
            named = [e for e in warnings(ns, name) if e.get("reason") == reasons.INVALID_SPEC]
            attack.expect(
                any(RENDER_BOUND_WORDS.search(str(e.get("message"))) for e in named),
                f"no Warning Event InvalidSpec naming the bound ({RENDER_BOUND_WORDS.pattern}); "
                f"got {[str(e.get('message'))[:200] for e in named]}",
            )
        return attack.figures
    finally:
        arena.clear(ns)


def fat_deployments(arena: Arena) -> Figures:
    """DEPLOYMENTS of ~1 MiB (replicas 0) that all read the token through an env var, then a
    credential beside them: its first pass runs the stale-consumer check over all of them."""
    ns = arena.namespace("fat")
    name = "fleet"
    try:
        ns.create_login_secret(LOGIN, USERNAME, PASSWORD)
        apps = client.AppsV1Api(ns.api)
        size = len(json.dumps(fat_deployment(0, name))) / MIB
        with arena.measuring(f"{DEPLOYMENTS} Deployments of {size:.1f} MiB") as attack:
            bodies: list[Any] = [fat_deployment(index, name) for index in range(DEPLOYMENTS)]
            took = in_parallel(
                [functools.partial(apps.create_namespaced_deployment, ns.name, b) for b in bodies]
            )
            attack.figures.notes.append(f"created in {took:.1f} s")
            ns.create_credential(name, credential_spec(arena.tenant_auth))

            def checked() -> bool:
                credential = ns.credential(name)
                stale = condition(credential, reasons.CONSUMERS_STALE)
                ready = condition(credential, "Ready")
                return bool(stale and stale["status"] == "True" and ready and ready["status"] == "True")

            attack.wait_until(checked, "Ready True and ConsumersStale True")
            credential = ns.credential(name)
            stale = condition(credential, reasons.CONSUMERS_STALE) or {}
            attack.figures.reason = f"{_ready_text(ns, name)}; ConsumersStale {stale.get('reason', '-')}"
            listed = (credential.get("status") or {}).get("staleConsumers") or []
            attack.figures.notes.append(f"{len(listed)} stale consumers in status")
            attack.expect(
                ns.ready_reason(name) == ("True", reasons.TOKEN_VALID),
                f"Ready is {_ready_text(ns, name)}, not True TokenValid",
            )
        return attack.figures
    finally:
        arena.clear(ns)


def bounded_credentials(arena: Arena) -> Figures:
    """CREDENTIALS SimacanCredentials with every bounded field at its bound plus ~256 KiB of
    metadata annotations (bounded_credential): each is served or rejected with a named reason,
    its status stays small, a rejection comes with a Warning Event, and so does an oversized
    refresh request on a credential that is not refused outright."""
    ns = arena.namespace("bounded")
    login = dns_subdomain(NAME_MAX, "login")
    try:
        body: Any = {
            "metadata": {"name": login},
            "stringData": {USERNAME_KEY: USERNAME, PASSWORD_KEY: PASSWORD},
        }
        ns.core.create_namespaced_secret(ns.name, body)
        sample = bounded_credential(1, arena.tenant_auth.base_url, login)
        size = len(json.dumps(sample)) / KIB
        with arena.measuring(f"{CREDENTIALS} credentials at every bound ({size:.0f} KiB each)") as attack:
            url = arena.tenant_auth.base_url
            create = functools.partial(
                ns.custom.create_namespaced_custom_object, GROUP, VERSION, ns.name, PLURAL
            )
            took = in_parallel(
                [functools.partial(create, bounded_credential(i, url, login)) for i in range(CREDENTIALS)]
            )
            attack.figures.notes.append(f"created in {took:.1f} s")

            def all_answered() -> bool:
                rows = ready_table(ns)
                return len(rows) == CREDENTIALS and all(reason for _, reason in rows.values())

            attack.wait_until(all_answered, f"a Ready reason on all {CREDENTIALS} credentials")
            rows = ready_table(ns)
            counted = Counter(f"{status} {reason}" for status, reason in rows.values())
            attack.figures.reason = ", ".join(f"{count} x {what}" for what, count in sorted(counted.items()))
            unnamed = sorted({reason for _, reason in rows.values()} - KNOWN_REASONS)
            attack.expect(not unnamed, f"reasons the operator does not name: {unnamed}")
            _judge_bounded(ns, attack)
        return attack.figures
    finally:
        arena.clear(ns)


def _judge_bounded(ns: Namespace, attack: Attack) -> None:
    """One read of the (large) objects and their Events: status sizes, Warnings for rejections."""
    listed: Any = ns.custom.list_namespaced_custom_object(GROUP, VERSION, ns.name, PLURAL)
    items: list[dict[str, Any]] = listed["items"]
    events = ns.events()
    largest = max(len(json.dumps(item.get("status") or {})) for item in items)
    attack.figures.notes.append(f"largest status {largest / KIB:.1f} KiB")
    attack.expect(
        largest <= STATUS_MAX_BYTES,
        f"a status of {largest / KIB:.1f} KiB (bound {STATUS_MAX_BYTES // KIB} KiB)",
    )
    unwarned: list[str] = []
    unreported_requests: list[str] = []
    for item in items:
        name = item["metadata"]["name"]
        own = [
            e
            for e in events
            if (e.get("involvedObject") or {}).get("name") == name and e.get("type") == "Warning"
        ]
        ready = condition(item, "Ready") or {}
        if ready.get("status") == "False" and not any(e.get("reason") == ready.get("reason") for e in own):
            unwarned.append(f"{name} ({ready.get('reason')})")
        request = (item["metadata"].get("annotations") or {}).get(f"{GROUP}/refresh-requested-at", "")
        if (
            len(request) > REFRESH_REQUEST_MAX
            and ready.get("reason") != reasons.INVALID_SPEC
            and not any(REFRESH_REQUEST_WARNING_WORDS in str(e.get("message")) for e in own)
        ):
            unreported_requests.append(name)
    attack.expect(not unwarned, f"Ready False without a Warning Event of that reason: {unwarned}")
    attack.expect(
        not unreported_requests,
        f"{len(unreported_requests)} oversized refresh requests without a Warning naming "
        f"{REFRESH_REQUEST_WARNING_WORDS}",
    )


def _ready_text(ns: Namespace, name: str) -> str:
    ready = ns.ready_reason(name)
    return f"{ready[0]} {ready[1]}" if ready else "no Ready condition"


ATTACKS: dict[str, Callable[[Arena], Figures]] = {
    "template-bomb": template_bomb,
    "fat-deployments": fat_deployments,
    "bounded-credentials": bounded_credentials,
}
