"""Client for the Simacan Auth API: two form-encoded POSTs that return a token pair."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
import zlib
from collections.abc import AsyncIterator, Callable, Sequence
from email.utils import parsedate_to_datetime

import certifi
import httpx

from simacan_token_operator.model.errors import (
    AuthError,
    InvalidCredentials,
    MalformedResponse,
    PermanentAuthError,
    RefreshRejected,
    TransientAuthError,
)
from simacan_token_operator.model.tokens import TokenParseError, TokenSet, parse_token_response

MAX_BODY_BYTES = 256 * 1024
"""A token pair is a few KiB; anything far larger is an error page or an attack. The limit holds
for the bytes on the wire and again for the bytes a gzip body decodes to."""

REQUEST_DEADLINE = 30.0
"""Seconds for a whole request, from connecting to the last byte of the body: a server that drips
one byte at a time never trips a per-read timeout, so only an overall deadline bounds it."""

REQUEST_TIMEOUT = httpx.Timeout(15.0, connect=5.0)
"""Per connect and per read or write; the overall deadline is `REQUEST_DEADLINE`."""

ACCEPT_ENCODING = "gzip"
"""The only encoding decoded (besides none); a stacked or unknown Content-Encoding is an error."""

TRANSIENT_CLIENT_ERRORS = frozenset({408, 425, 429})
"""4xx codes that mean "later", not "never": request timeout, too early, too many requests."""

Observer = Callable[[str, str, float], None]
"""Called with (endpoint, outcome, seconds) after every request, for metrics."""


def http_client(ca_files: str | Sequence[str] | None = None) -> httpx.AsyncClient:
    """One pooled client for the whole operator; extra CAs add to, not replace, the public roots."""
    context = ssl.create_default_context(cafile=certifi.where())
    for ca_file in [ca_files] if isinstance(ca_files, str) else ca_files or ():
        context.load_verify_locations(cafile=ca_file)
    return httpx.AsyncClient(
        verify=context,
        timeout=REQUEST_TIMEOUT,
        follow_redirects=False,
        trust_env=False,
        headers={
            "Accept": "application/json",
            "Accept-Encoding": ACCEPT_ENCODING,
            "User-Agent": "simacan-token-operator",
        },
    )


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError, OverflowError):
            return None
    # A day at most: a hostile or broken header must not park a credential for ever.
    return min(max(seconds, 0.0), 86400.0) if seconds == seconds else None


def content_coding(header: str | None) -> str:
    """`identity` or `gzip`; anything else (stacked, deflate, br, unknown) is a MalformedResponse."""
    codings = [c.strip().lower() for c in (header or "").split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return "identity"
    if codings in (["gzip"], ["x-gzip"]):
        return "gzip"
    raise MalformedResponse(
        f"the Auth API answered with Content-Encoding {', '.join(codings)[:60]!r}; only gzip is accepted"
    )


async def read_body(raw: AsyncIterator[bytes], coding: str, limit: int = MAX_BODY_BYTES) -> bytes:
    """The body, decoded, holding at most `limit` bytes on the wire and `limit` bytes decoded.

    Decoding is incremental and capped per chunk, so a small compressed body that would expand to
    gigabytes costs no more memory than `limit`.
    """
    too_large = MalformedResponse(f"the Auth API response is larger than {limit} bytes")
    decoder = zlib.decompressobj(16 + zlib.MAX_WBITS) if coding == "gzip" else None
    wire = 0
    out: list[bytes] = []
    size = 0
    async for chunk in raw:
        wire += len(chunk)
        if wire > limit:
            raise too_large
        if decoder is None:
            out.append(chunk)
            size += len(chunk)
            continue
        if decoder.eof:
            raise MalformedResponse("the Auth API response has data after its gzip stream")
        try:
            piece = decoder.decompress(chunk, limit - size + 1)
        except zlib.error:
            raise MalformedResponse("the Auth API response is not valid gzip") from None
        size += len(piece)
        if size > limit or decoder.unconsumed_tail:
            raise too_large
        out.append(piece)
        if decoder.unused_data:
            raise MalformedResponse("the Auth API response has data after its gzip stream")
    if decoder is not None and not decoder.eof:
        raise MalformedResponse("the Auth API response is truncated gzip")
    return b"".join(out)


class AuthAPI:
    """Log in and refresh. Raises the typed errors of `errors`; never returns a partial result."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        observe: Observer | None = None,
        clock: Callable[[], float] = time.time,
        deadline: float = REQUEST_DEADLINE,
    ) -> None:
        """`clock` gives the send time that a token's expiry counts from; tests pass a fake one."""
        self._client = client
        self._observe = observe
        self._clock = clock
        self._deadline = deadline

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
            async with asyncio.timeout(self._deadline):
                async with self._client.stream(
                    "POST", url, data=form, headers={"Accept-Encoding": ACCEPT_ENCODING}
                ) as response:
                    outcome = str(response.status_code)
                    self._raise_for_status(endpoint, response)
                    coding = content_coding(response.headers.get("Content-Encoding"))
                    body = await read_body(response.aiter_raw(), coding)
            tokens = self._parse(body, sent_at)
            outcome = "ok"
            return tokens
        except MalformedResponse:
            outcome = "malformed"
            raise
        except AuthError:
            raise
        except (httpx.TimeoutException, TimeoutError):
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
        if status in TRANSIENT_CLIENT_ERRORS or status >= 500:
            retry_after = _retry_after(response)
            raise TransientAuthError(f"the Auth API answered HTTP {status}", retry_after=retry_after)
        if endpoint == "refresh" and 400 <= status < 500:
            # Whatever the refresh endpoint dislikes, the password may still work: try it once.
            raise RefreshRejected(f"the Auth API refused the refresh token (HTTP {status})")
        if endpoint == "password" and status == 401:
            raise InvalidCredentials(
                "the Auth API rejected the username and password (HTTP 401); "
                "fix the credentials Secret, then the operator retries at once"
            )
        raise PermanentAuthError(f"the Auth API answered HTTP {status} to /auth/{endpoint}; check authURL")

    @staticmethod
    def _parse(body: bytes, sent_at: float) -> TokenSet:
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            # ValueError covers bad UTF-8, bad JSON and integers beyond Python's 4,300-digit limit.
            raise MalformedResponse("the Auth API response is not JSON") from None
        try:
            return parse_token_response(payload, sent_at)
        except TokenParseError as error:
            raise MalformedResponse(f"the Auth API response is unusable: {error}") from None
