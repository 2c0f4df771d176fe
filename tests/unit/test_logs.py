"""Logging: the operator's loggers follow --log-level, HTTP libraries never log below WARNING."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from simacan_token_operator.app import logs


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    """configure() changes process-wide logging; put it back for the other tests of this worker."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    names = [*logs.HTTP_LOGGERS, "kopf", "simacan_token_operator"]
    saved = {name: logging.getLogger(name).level for name in names}
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for name, level in saved.items():
        logging.getLogger(name).setLevel(level)


@pytest.mark.parametrize("level", ["debug", "info", "warning", "error"])
def test_http_libraries_stay_at_warning_whatever_the_level(level: str) -> None:
    logs.configure(level)

    for name in logs.HTTP_LOGGERS:
        assert not logging.getLogger(name).isEnabledFor(logging.INFO), name
        assert not logging.getLogger(f"{name}.child").isEnabledFor(logging.DEBUG), name
    assert logging.getLogger("simacan_token_operator").getEffectiveLevel() == getattr(logging, level.upper())


@pytest.mark.parametrize(
    "name",
    ["httpx", "httpcore.http11", "httpcore.connection", "urllib3.connectionpool", "kubernetes.client.rest"],
)
def test_the_loggers_that_print_headers_and_bodies_are_covered(name: str) -> None:
    logs.configure("debug")

    assert not logging.getLogger(name).isEnabledFor(logging.DEBUG)


def test_kopf_is_quiet_unless_debugging() -> None:
    logs.configure("info")
    assert not logging.getLogger("kopf").isEnabledFor(logging.INFO)

    logs.configure("debug")
    assert logging.getLogger("kopf").isEnabledFor(logging.DEBUG)
