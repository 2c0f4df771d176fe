"""Client for the Simacan Auth API: two form-encoded POSTs that return a token pair."""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable
from email.utils import parsedate_to_datetime

import certifi
import httpx

from .errors import (
    AuthError,
    InvalidCredentials,
    MalformedResponse,
    PermanentAuthError,
    RefreshRejected,
    TransientAuthError,
)
from .tokens import TokenParseError, TokenSet, parse_token_response

MAX_BODY_BYTES = 256 * 1024
"""A token pair is a few KiB; anything far larger is an error page or an attack."""

REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=5.0)

Observer = Callable[[str, str, float], None]
"""Called with (endpoint, outcome, seconds) after every request, for metrics."""


def http_client(ca_file: str | None = None) -> httpx.AsyncClient:
    """One pooled client for the whole operator; an extra CA adds to, not replaces, the public roots."""
    context = ssl.create_default_context(cafile=certifi.where())
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return httpx.AsyncClient(
        verify=context,
        timeout=REQUEST_TIMEOUT,
        follow_redirects=False,
        trust_env=False,
        headers={"Accept": "application/json", "User-Agent": "simacan-token-operator"},
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


class AuthAPI:
    """Log in and refresh. Raises the typed errors of `errors`; never returns a partial result."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        observe: Observer | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """`clock` gives the send time that a token's expiry counts from; tests pass a fake one."""
        self._client = client
        self._observe = observe
        self._clock = clock

    async def login(self, base_url: str, username: str, password: str) -> TokenSet:
        return await self._post(base_url, "password", {"username": username, "password": password})

    async def refresh(self, base_url: str, refresh_token: str) -> TokenSet:
        return await self._post(base_url, "refresh", {"refresh_token": refresh_token})

    async def _post(self, base_url: str, endpoint: str, form: dict[str, str]) -> TokenSet:
        url = f"{base_url.rstrip('/')}/auth/{endpoint}"
        sent_at = self._clock()
        started = time.monotonic()
        outcome = "error"
        try:
            async with self._client.stream("POST", url, data=form) as response:
                outcome = str(response.status_code)
                self._raise_for_status(endpoint, response)
                body = await self._read_limited(response)
            tokens = self._parse(body, sent_at)
            outcome = "ok"
            return tokens
        except MalformedResponse:
            outcome = "malformed"
            raise
        except AuthError:
            raise
        except httpx.TimeoutException:
            outcome = "timeout"
            raise TransientAuthError(f"the Auth API did not answer /auth/{endpoint} in time") from None
        except httpx.TransportError as error:
            outcome = "unreachable"
            raise TransientAuthError(
                f"cannot reach the Auth API for /auth/{endpoint} ({type(error).__name__})"
            ) from None
        finally:
            if self._observe is not None:
                self._observe(endpoint, outcome, time.monotonic() - started)

    @staticmethod
    def _raise_for_status(endpoint: str, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        if endpoint == "refresh" and status in (400, 401):
            raise RefreshRejected(f"the Auth API refused the refresh token (HTTP {status})")
        if endpoint == "password" and status == 401:
            raise InvalidCredentials(
                "the Auth API rejected the username and password (HTTP 401); "
                "fix the credentials Secret, then the operator retries at once"
            )
        if status in (408, 425, 429) or status >= 500:
            retry_after = _retry_after(response)
            raise TransientAuthError(f"the Auth API answered HTTP {status}", retry_after=retry_after)
        raise PermanentAuthError(f"the Auth API answered HTTP {status} to /auth/{endpoint}; check authURL")

    @staticmethod
    async def _read_limited(response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > MAX_BODY_BYTES:
                raise MalformedResponse(f"the Auth API response is larger than {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    @staticmethod
    def _parse(body: bytes, sent_at: float) -> TokenSet:
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise MalformedResponse("the Auth API response is not JSON") from None
        try:
            return parse_token_response(payload, sent_at)
        except TokenParseError as error:
            raise MalformedResponse(f"the Auth API response is unusable: {error}") from None
