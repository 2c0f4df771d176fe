"""The kubernetes client's credentials hook runs at most once a second, and still refreshes.

The loaders' hook runs before every request and, besides re-reading a token near its expiry, sets
the host again, which reads the whole environment for proxies (kube/api.py,
refreshing_at_most_every)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes.config import kube_config

from simacan_token_operator.app.cli import load_kube_config
from simacan_token_operator.kube.api import refreshing_at_most_every
from tests.unit.conftest import FakeClock


class Configuration:
    """As the loaders treat it: their hook installs a fresh hook of theirs each time it runs."""

    def __init__(self) -> None:
        self.calls = 0
        self.refresh_api_key_hook: Any = self.loaders_hook()

    def loaders_hook(self) -> Any:
        def hook(configuration: Configuration) -> None:
            configuration.calls += 1
            configuration.refresh_api_key_hook = configuration.loaders_hook()

        return hook

    def before_a_request(self) -> None:
        self.refresh_api_key_hook(self)


def test_the_hook_runs_once_per_interval_and_again_after_it() -> None:
    clock = FakeClock(100.0)  # a fixed start: the sums below are then the same in every run
    configuration = Configuration()
    loaders_hook = configuration.refresh_api_key_hook
    configuration.refresh_api_key_hook = refreshing_at_most_every(1.0, loaders_hook, clock)

    for _ in range(1000):
        configuration.before_a_request()
    assert configuration.calls == 1, "every request ran the hook"

    clock.advance(0.999)
    configuration.before_a_request()
    assert configuration.calls == 1
    clock.advance(0.001)
    configuration.before_a_request()
    assert configuration.calls == 2, "a second later the hook runs again: an expiring token is still re-read"
    for _ in range(1000):
        configuration.before_a_request()
    assert configuration.calls == 2, "the loader's hook, re-installed by its own run, replaced the wrapper"


KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "https://127.0.0.1:6443", insecure-skip-tls-verify: true}
users:
- name: u
  user: {token: not-a-real-token}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
"""


def test_the_operators_client_wraps_the_loaders_hook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(KUBECONFIG)
    # The loader reads KUBECONFIG once, when it is imported.
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    configuration = load_kube_config().configuration

    for _ in range(3):
        settings = configuration.auth_settings()  # runs the hook, as every request does
        assert settings["BearerToken"]["value"] == "Bearer not-a-real-token"
        hook = configuration.refresh_api_key_hook
        assert hook.__qualname__.startswith("refreshing_at_most_every"), "the loader's hook runs per request"
