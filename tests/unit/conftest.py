"""Factories for the unit tests: JWTs with chosen claims, a hand-moved clock, and a live fake Auth API."""

from __future__ import annotations

import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import certifi
import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from localenv.fakeauth import FakeAuthAPI, write_certificate
from localenv.pki import ServingCertificate
from simacan_token_operator.auth.client import AuthAPI
from simacan_token_operator.model.spec import LoginSource

USERNAME = "route-planner-bot@example.com"
PASSWORD = "unit-test-password-Hq83vZk2"
_HMAC_KEY = "unit-tests-only-hmac-key-that-is-long-enough-for-hs256"

MakeJwt = Callable[..., str]
Observation = tuple[str, str, float]


class FakeClock:
    """A wall clock the test moves by hand, so backoff and expiry need no sleeping."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _make_jwt(**claims: Any) -> str:
    return jwt.encode(claims, _HMAC_KEY, algorithm="HS256")


@pytest.fixture
def make_jwt() -> MakeJwt:
    """Build a JWT with exactly the given claims; the operator never checks signatures."""
    return _make_jwt


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture(scope="session")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> ServingCertificate:
    """TLS files the session's HTTPS fakes share: only the fake's own start() is under test."""
    return write_certificate(tmp_path_factory.mktemp("fakeauth-tls"))


@pytest.fixture
def fake_auth(signing_key: rsa.RSAPrivateKey) -> Iterator[FakeAuthAPI]:
    """The fake Auth API on 127.0.0.1 with one user and one-hour tokens, as production issues them."""
    with FakeAuthAPI({USERNAME: PASSWORD}, signing_key=signing_key) as fake:
        yield fake


@pytest.fixture
def source(fake_auth: FakeAuthAPI) -> LoginSource:
    """The right credentials for the fake."""
    return LoginSource(fake_auth.base_url, USERNAME, PASSWORD)


@pytest.fixture(scope="session")
def public_roots() -> ssl.SSLContext:
    """httpx's default verification (certifi's roots), loaded once: loading them takes ~25 ms a client."""
    return ssl.create_default_context(cafile=certifi.where())


@pytest.fixture
async def http(public_roots: ssl.SSLContext) -> AsyncIterator[httpx.AsyncClient]:
    """A short timeout, so a silent server fails a test in half a second instead of fifteen."""
    async with httpx.AsyncClient(timeout=0.5, trust_env=False, verify=public_roots) as client:
        yield client


@pytest.fixture
def observations() -> list[Observation]:
    return []


@pytest.fixture
def api(http: httpx.AsyncClient, observations: list[Observation]) -> AuthAPI:
    return AuthAPI(
        http, observe=lambda endpoint, outcome, seconds: observations.append((endpoint, outcome, seconds))
    )
