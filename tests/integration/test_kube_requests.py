"""simacan_kube_requests_total from a running operator: its own requests by verb, resource and
code, so users can check the requests per Secret write in production; kopf's are not in it."""

from __future__ import annotations

import re
from collections.abc import Callable

from localenv.fakeauth import FakeAuthAPI
from localenv.k8s import Namespace
from localenv.operator_process import OperatorProcess
from localenv.polling import eventually
from simacan_token_operator.kube.metered import RESOURCES
from tests.conftest import PASSWORD, USERNAME, credential_spec

_SAMPLE = re.compile(r"^simacan_kube_requests_total\{(?P<labels>[^}]*)\} (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="([^"]*)"')
VERBS = {"get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"}


def kube_requests(operator: OperatorProcess) -> dict[tuple[str, str, str], float]:
    """Every row of simacan_kube_requests_total: (verb, resource, code) -> count."""
    rows = {}
    for line in operator.metrics().splitlines():
        if match := _SAMPLE.match(line):
            labels = dict(_LABEL.findall(match["labels"]))
            rows[labels["verb"], labels["resource"], labels["code"]] = float(match["value"])
    return rows


def test_the_operator_counts_its_own_kubernetes_requests(
    ns: Namespace, fake_auth: FakeAuthAPI, start_operator: Callable[..., OperatorProcess]
) -> None:
    ns.create_login_secret("login", USERNAME, PASSWORD)
    ns.create_credential("fleet-api", credential_spec(fake_auth))
    operator = start_operator("--kube-api-qps", "50", "--kube-api-burst", "20")
    ns.ready_token("fleet-api")

    eventually(
        lambda: kube_requests(operator).get(("patch", "simacancredentials/status", "200")),
        what="the status patch counted",
    )
    rows = kube_requests(operator)
    for (verb, resource, code), count in sorted(rows.items()):
        print(f"simacan_kube_requests_total {verb} {resource} {code}: {count:g}")
    assert rows.get(("create", "secrets", "201"), 0) >= 1, rows
    assert rows.get(("watch", "secrets", "200"), 0) >= 1, "our metadata-only Secret watch"
    for verb, resource, code in rows:
        assert verb in VERBS, verb
        assert resource.removesuffix("/status") in RESOURCES, resource
        assert code == "error" or code.isdigit(), code
    # kopf lists and watches the SimacanCredentials; the operator itself lists them once, when it
    # begins to work (controller/startgate.py), and otherwise only patches their status
    assert {resource for _, resource, _ in rows if resource.startswith("simacancredentials")} == {
        "simacancredentials",
        "simacancredentials/status",
    }
    listed = {
        (verb, code): n for (verb, resource, code), n in rows.items() if resource == "simacancredentials"
    }
    assert listed == {("list", "200"): 1}, "one page, once"
    assert {verb for verb, resource, _ in rows if resource == "simacancredentials/status"} == {"patch"}
