"""A fake Simacan Auth API 1.0 for tests and benchmarks.

It speaks real HTTP (optionally HTTPS) on loopback and issues real RS256 JWTs, so the operator's client is
exercised over the same wire format it meets in production, while tests script users, lifetimes and faults.

Usage::

    with FakeAuthAPI(users={"bot@example.com": "s3cret"}, access_lifetime=3.0) as fake:
        fake.fail_next("password", Fault.http_error(503))
        ...  # point the operator at fake.base_url
        fake.wait_for_calls(2, endpoint="password", timeout=5)

Run ``python -m localenv.fakeauth --port 8080 --user u:p --lifetime 60`` to serve it in the foreground.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import enum
import functools
import gzip
import json
import logging
import shutil
import signal
import socket
import socketserver
import ssl
import tempfile
import threading
import time
import urllib.parse
import uuid
import weakref
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Final, Literal, Self, cast, get_args

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from localenv.loopback import LoopbackService
from localenv.pki import ServingCertificate, new_rsa_key, public_key_pem, write_serving_certificate

log = logging.getLogger(__name__)

Endpoint = Literal["password", "refresh"]
ExpiresInStyle = Literal["string", "number", "omit"]
TokenKind = Literal["access", "refresh"]

ENDPOINTS: Final[tuple[Endpoint, ...]] = get_args(Endpoint)
AUDIENCE: Final = "auth-api"
ISSUER: Final = "https://sso-fake.simacan.invalid/auth/realms/simacan_transport_cloud"
DEFAULT_PATH_PREFIX: Final = "/api/v1"
DEFAULT_ACCESS_LIFETIME: Final = 3600.0
DEFAULT_REFRESH_LIFETIME: Final = 86400.0
HUGE_BODY_SIZE: Final = 5 * 1024 * 1024
MAX_REQUEST_BODY: Final = 64 * 1024
FORM_CONTENT_TYPE: Final = "application/x-www-form-urlencoded"

_JSON: Final = (("Content-Type", "application/json"), ("Cache-Control", "no-store"))


# --------------------------------------------------------------------------------------------- faults


class FaultKind(enum.Enum):
    SLOW = "slow"  # answer normally, only late
    HTTP_ERROR = "http_error"
    NOT_JSON = "not_json"
    HTML_PAGE = "html_page"
    MISSING_FIELDS = "missing_fields"
    ACCESS_NOT_JWT = "access_not_jwt"
    NO_EXPIRY = "no_expiry"
    HUGE_BODY = "huge_body"
    DROP_CONNECTION = "drop_connection"
    RAW = "raw"  # a canned status, body and headers
    DRIP = "drip"  # the normal answer, one byte at a time
    GZIPPED = "gzipped"  # the normal answer, gzip-encoded
    CLAIMS = "claims"  # the normal answer, with access-token claims overridden
    ECHO = "echo"  # the normal answer, with a Set-Cookie and the request's form echoed in headers


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour; build it with the named constructors, not the raw fields.

    Token-shaped faults (missing fields, opaque access token, no expiry) only bend a response that would
    have succeeded; a request with bad credentials still gets its normal 401/400.
    """

    kind: FaultKind
    status: int = 200
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    omit: tuple[str, ...] = ()
    size: int = 0
    claims: tuple[tuple[str, Any], ...] = ()
    interval: float = 0.0

    @classmethod
    def http_error(
        cls,
        status: int,
        body: str | bytes | Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Fault:
        """Answer with `status`; a mapping body is sent as JSON, text as text/plain."""
        extra = dict(headers or {})
        if body is None:
            body = {"error": "injected_fault", "error_description": f"HTTP {status} injected by the fake"}
        if isinstance(body, Mapping):
            raw, content_type = json.dumps(body).encode(), "application/json"
        elif isinstance(body, str):
            raw, content_type = body.encode(), "text/plain; charset=utf-8"
        else:
            raw, content_type = body, "application/octet-stream"
        if not any(name.lower() == "content-type" for name in extra):
            extra["Content-Type"] = content_type
        return cls(FaultKind.HTTP_ERROR, status=status, body=raw, headers=tuple(extra.items()))

    @classmethod
    def rate_limited(cls, retry_after: int | str = 2) -> Fault:
        return cls.http_error(429, headers={"Retry-After": str(retry_after)})

    @classmethod
    def slow(cls, seconds: float) -> Fault:
        """Answer normally, but only after `seconds` (to trip client timeouts)."""
        return cls(FaultKind.SLOW, delay=seconds)

    @classmethod
    def not_json(cls) -> Fault:
        return cls(FaultKind.NOT_JSON, body=b"all good, but this is not JSON\n")

    @classmethod
    def html_page(cls) -> Fault:
        """A 200 HTML page, the way a misconfigured proxy or captive portal answers."""
        page = b"<!DOCTYPE html><html><head><title>Maintenance</title></head><body>Back soon</body></html>"
        return cls(FaultKind.HTML_PAGE, body=page)

    @classmethod
    def missing_fields(cls, *names: str) -> Fault:
        """Drop `names` (default: access_token) from an otherwise good token response."""
        return cls(FaultKind.MISSING_FIELDS, omit=names or ("access_token",))

    @classmethod
    def access_token_not_jwt(cls) -> Fault:
        return cls(FaultKind.ACCESS_NOT_JWT)

    @classmethod
    def no_expiry(cls) -> Fault:
        """Access token without `exp`, response without `expires_in`: the lifetime is unknowable."""
        return cls(FaultKind.NO_EXPIRY)

    @classmethod
    def huge_body(cls, size: int = HUGE_BODY_SIZE) -> Fault:
        return cls(FaultKind.HUGE_BODY, size=size)

    @classmethod
    def drop_connection(cls) -> Fault:
        """Close the socket without any response."""
        return cls(FaultKind.DROP_CONNECTION)

    @classmethod
    def raw(cls, body: str | bytes, headers: Mapping[str, str] | None = None, status: int = 200) -> Fault:
        """Answer exactly `body` (no Content-Type unless given): for odd 200 answers and encodings."""
        raw = body.encode("utf-8", errors="surrogatepass") if isinstance(body, str) else body
        return cls(FaultKind.RAW, status=status, body=raw, headers=tuple((headers or {}).items()))

    @classmethod
    def gzip_bomb(cls, decoded_size: int, layers: int = 1) -> Fault:
        """A 200 whose body is `decoded_size` bytes of JSON padding gzipped `layers` times, with
        `Content-Encoding: gzip, gzip, ...`: a few KiB on the wire that expand to gigabytes."""
        encoding = ", ".join(["gzip"] * layers)
        body = _gzip_bomb(decoded_size, layers)
        return cls.raw(body, {"Content-Type": "application/json", "Content-Encoding": encoding})

    @classmethod
    def drip(cls, interval: float = 1.0) -> Fault:
        """Send the normal answer one byte every `interval` seconds: no single read ever times out."""
        return cls(FaultKind.DRIP, interval=interval)

    @classmethod
    def gzipped(cls) -> Fault:
        """The normal answer with `Content-Encoding: gzip`, as a compressing proxy sends it."""
        return cls(FaultKind.GZIPPED)

    @classmethod
    def with_claims(cls, **claims: Any) -> Fault:
        """The normal answer, its access token re-signed with `claims` overridden (None deletes one)."""
        return cls(FaultKind.CLAIMS, claims=tuple(claims.items()))

    @classmethod
    def echo(cls) -> Fault:
        """The normal answer plus a `Set-Cookie` and every form field echoed back in a header, the way
        a debugging proxy or a careless server does: a client that logs headers leaks secrets."""
        return cls(FaultKind.ECHO)

    def after(self, seconds: float) -> Fault:
        """The same fault, delivered after a delay."""
        return replace(self, delay=seconds)


# --------------------------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Call:
    endpoint: Endpoint
    username: str | None  # claimed user for password, token owner for refresh (None if unknown)
    status: int | None  # None: connection dropped without a response
    at: float  # clock() when the answer was decided (before any injected delay)
    fault: FaultKind | None = None
    peer: str = ""  # the caller's IP address: shows whether a pod or a local process asked


@dataclass(frozen=True)
class IssuedToken:
    kind: TokenKind
    token: str
    username: str
    jti: str
    expires_at: float | None  # None when issued without exp (Fault.no_expiry)


@dataclass
class _User:
    password: str
    sub: str


@dataclass
class _RefreshGrant:
    username: str
    expires_at: float
    revoked: bool = False


@dataclass(frozen=True)
class _Reply:
    status: int | None  # None: drop the connection
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()
    delay: float = 0.0
    interval: float = 0.0  # > 0: send the reply one byte per interval


_DROP: Final = _Reply(None)


def _json_reply(status: int, payload: Mapping[str, Any]) -> _Reply:
    return _Reply(status, json.dumps(payload).encode(), _JSON)


def _error_reply(status: int, error: str, description: str) -> _Reply:
    return _json_reply(status, {"error": error, "error_description": description})


def _lifetime_number(seconds: float) -> int | float:
    return int(seconds) if float(seconds).is_integer() else seconds


@functools.lru_cache(maxsize=4)
def _gzip_bomb(decoded_size: int, layers: int) -> bytes:
    """JSON padding of `decoded_size` bytes, gzipped `layers` times, built in 1 MiB steps so that
    making a gigabyte bomb costs this process a few MiB, not a gigabyte."""
    head, tail = b'{"padding": "', b'"}'
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [compressor.compress(head)]
    left = max(decoded_size - len(head) - len(tail), 0)
    step = b" " * (1 << 20)
    while left > 0:
        parts.append(compressor.compress(step[: min(left, len(step))]))
        left -= len(step)
    parts.append(compressor.compress(tail))
    parts.append(compressor.flush())
    body = b"".join(parts)
    for _ in range(layers - 1):
        body = gzip.compress(body, compresslevel=9)
    return body


def _header_safe(value: str) -> str:
    """Header values go out as Latin-1; quote anything else rather than fail the fault."""
    return value if value.isascii() and value.isprintable() else urllib.parse.quote(value, safe="")


# --------------------------------------------------------------------------------------------- the fake


class FakeAuthAPI(LoopbackService):
    """The fake itself; thread-safe, usable from sync and async tests."""

    def __init__(
        self,
        users: Mapping[str, str] | None = None,
        *,
        access_lifetime: float = DEFAULT_ACCESS_LIFETIME,
        refresh_lifetime: float = DEFAULT_REFRESH_LIFETIME,
        expires_in_style: ExpiresInStyle = "string",
        refresh_error_status: int = 400,
        rotate_refresh_tokens: bool = False,
        tls: bool = False,
        host: str = "127.0.0.1",
        port: int = 0,
        path_prefix: str = DEFAULT_PATH_PREFIX,
        clock: Callable[[], float] = time.time,
        signing_key: rsa.RSAPrivateKey | None = None,
        certificate: ServingCertificate | None = None,
    ) -> None:
        """`signing_key` lets a suite share one RSA key across many fakes; by default start() makes one.
        `certificate` (from `write_certificate`, implies `tls`) likewise shares the TLS files: a fake
        does not delete what it was given.

        `host` is the IPv4 address to serve on: loopback, or a pod network's gateway for pods to reach.
        """
        # Plain attributes: tests may change them while the server runs; each request reads them once.
        self.access_lifetime = access_lifetime
        self.refresh_lifetime = refresh_lifetime
        self.expires_in_style: ExpiresInStyle = expires_in_style
        self.refresh_error_status = refresh_error_status
        self.rotate_refresh_tokens = rotate_refresh_tokens

        self._tls = tls or certificate is not None
        self._host = host
        self._port = port
        self._prefix = path_prefix.rstrip("/")
        self._clock = clock

        self._lock = threading.Lock()
        self._calls_changed = threading.Condition(self._lock)
        self._users: dict[str, _User] = {}
        self._calls: list[Call] = []
        self._issued: list[IssuedToken] = []
        self._passwords_seen: list[str] = []
        self._cookies_set: list[str] = []
        self._grants: dict[str, _RefreshGrant] = {}
        self._queued: dict[Endpoint, deque[Fault]] = {endpoint: deque() for endpoint in ENDPOINTS}
        self._sticky: dict[Endpoint, Fault | None] = dict.fromkeys(ENDPOINTS)

        self._signing_key = signing_key
        self._kid = uuid.uuid4().hex
        self._tls_files = certificate
        self._tls_cleanup: weakref.finalize[Any, Any] | None = None
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

        for username, password in (users or {}).items():
            self.add_user(username, password)

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind and serve in a background thread; after stop() it comes back on the same port and key."""
        if self._server is not None:
            raise RuntimeError("FakeAuthAPI is already running")
        if self._signing_key is None:
            self._signing_key = new_rsa_key()
        tls_context = self._server_tls_context() if self._tls else None
        self._stopping.clear()
        server = _Server((self._host, self._port), self, tls_context)
        self._port = server.server_address[1]
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.01}, name=f"fakeauth:{self._port}"
        )
        thread.daemon = True
        thread.start()
        self._server, self._thread = server, thread
        return self

    def stop(self) -> None:
        """Stop serving, even with delayed requests or idle keep-alive connections pending."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping.set()  # wakes handlers sleeping in an injected delay
        server.shutdown()
        server.close_connections()  # wakes handlers blocked on idle keep-alive sockets
        server.server_close()  # joins the handler threads
        thread.join()
        self._server = self._thread = None

    def close(self) -> None:
        """Stop and delete the TLS files it wrote itself."""
        self.stop()
        if self._tls_cleanup is not None:
            self._tls_cleanup()
            self._tls_files = self._tls_cleanup = None

    @property
    def running(self) -> bool:
        return self._server is not None

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("FakeAuthAPI has not been started")
        return self._port

    @property
    def base_url(self) -> str:
        scheme = "https" if self._tls else "http"
        return f"{scheme}://{self._host}:{self.port}{self._prefix}"

    @property
    def ca_file(self) -> Path:
        """PEM of the CA that signed the server certificate (give it to --auth-ca-file)."""
        if self._tls_files is None:
            raise RuntimeError("ca_file exists only for a started FakeAuthAPI(tls=True)")
        return self._tls_files.ca_file

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts exactly this fake's CA."""
        return ssl.create_default_context(cafile=str(self.ca_file))

    @property
    def public_key_pem(self) -> str:
        if self._signing_key is None:
            raise RuntimeError("FakeAuthAPI has not been started")
        return public_key_pem(self._signing_key).decode()

    # ------------------------------------------------------------------ users and tokens

    def add_user(self, username: str, password: str) -> None:
        with self._lock:
            existing = self._users.get(username)
            sub = existing.sub if existing else str(uuid.uuid5(uuid.NAMESPACE_URL, f"fakeauth:{username}"))
            self._users[username] = _User(password=password, sub=sub)

    def set_password(self, username: str, new_password: str) -> None:
        """Rotate a password; the old one gets 401 from now on. Refresh tokens stay valid, as in Keycloak."""
        with self._lock:
            self._users[username].password = new_password

    def remove_user(self, username: str) -> None:
        """Delete a user; logins and refreshes for it are rejected from now on."""
        with self._lock:
            del self._users[username]

    def revoke_refresh_tokens(self, username: str | None = None) -> None:
        with self._lock:
            for grant in self._grants.values():
                if username is None or grant.username == username:
                    grant.revoked = True

    @property
    def issued_tokens(self) -> list[IssuedToken]:
        with self._lock:
            return list(self._issued)

    @property
    def passwords_seen(self) -> list[str]:
        """Every password submitted to /auth/password, right or wrong."""
        with self._lock:
            return list(self._passwords_seen)

    def secret_strings(self) -> set[str]:
        """Every secret that must never show up in logs: passwords (configured or sent) and tokens issued."""
        with self._lock:
            found = {user.password for user in self._users.values()}
            found.update(self._passwords_seen)
            found.update(issued.token for issued in self._issued)
            found.update(self._cookies_set)
        found.discard("")
        return found

    # ------------------------------------------------------------------ faults

    def fail_next(self, endpoint: Endpoint, fault: Fault, times: int = 1) -> None:
        """Queue `fault` for the next `times` requests to `endpoint`; queued faults win over sticky ones."""
        _check_endpoint(endpoint)
        with self._lock:
            self._queued[endpoint].extend([fault] * times)

    def set_fault(self, endpoint: Endpoint, fault: Fault | None) -> None:
        """Apply `fault` to every request to `endpoint` until set back to None."""
        _check_endpoint(endpoint)
        with self._lock:
            self._sticky[endpoint] = fault

    def clear_faults(self) -> None:
        with self._lock:
            for endpoint in ENDPOINTS:
                self._queued[endpoint].clear()
                self._sticky[endpoint] = None

    # ------------------------------------------------------------------ counting

    @property
    def calls(self) -> list[Call]:
        with self._lock:
            return list(self._calls)

    def count(
        self, endpoint: Endpoint | None = None, username: str | None = None, status: int | None = None
    ) -> int:
        with self._lock:
            return len(self._matching(endpoint, username, status))

    def reset_counts(self) -> None:
        """Forget the call history (issued tokens and seen passwords are kept for leak checks)."""
        with self._lock:
            self._calls.clear()

    def wait_for_calls(
        self,
        n: int,
        endpoint: Endpoint | None = None,
        username: str | None = None,
        status: int | None = None,
        timeout: float = 5.0,
    ) -> list[Call]:
        """Block until at least `n` matching calls were recorded; raise TimeoutError at the deadline."""
        with self._calls_changed:
            if not self._calls_changed.wait_for(
                lambda: len(self._matching(endpoint, username, status)) >= n, timeout=timeout
            ):
                seen = len(self._matching(endpoint, username, status))
                what = f"endpoint={endpoint!r} username={username!r} status={status!r}"
                raise TimeoutError(f"expected {n} calls ({what}) within {timeout}s, saw {seen}")
            return self._matching(endpoint, username, status)

    def _matching(self, endpoint: Endpoint | None, username: str | None, status: int | None) -> list[Call]:
        return [
            call
            for call in self._calls
            if (endpoint is None or call.endpoint == endpoint)
            and (username is None or call.username == username)
            and (status is None or call.status == status)
        ]

    # ------------------------------------------------------------------ request handling

    def _route(self, path: str) -> Endpoint | None:
        path = urllib.parse.urlsplit(path).path
        for endpoint in ENDPOINTS:
            if path == f"{self._prefix}/auth/{endpoint}":
                return endpoint
        return None

    def _answer(self, endpoint: Endpoint, form: Mapping[str, str] | None, peer: str = "") -> _Reply:
        """Decide the whole reply and record the call; `form` is None when the body was not a form."""
        with self._calls_changed:
            fault = self._next_fault(endpoint)
            if endpoint == "password" and form is not None and "password" in form:
                self._passwords_seen.append(form["password"])
            username = self._claimed_username(endpoint, form or {})
            reply = self._reply(endpoint, form, fault)
            self._calls.append(
                Call(endpoint, username, reply.status, self._clock(), fault.kind if fault else None, peer)
            )
            self._calls_changed.notify_all()
        return replace(reply, delay=fault.delay) if fault else reply

    def _next_fault(self, endpoint: Endpoint) -> Fault | None:
        queued = self._queued[endpoint]
        return queued.popleft() if queued else self._sticky[endpoint]

    def _claimed_username(self, endpoint: Endpoint, form: Mapping[str, str]) -> str | None:
        if endpoint == "password":
            return form.get("username")
        grant = self._grant_for(form.get("refresh_token", ""))
        return grant.username if grant else None

    def _reply(self, endpoint: Endpoint, form: Mapping[str, str] | None, fault: Fault | None) -> _Reply:
        kind = fault.kind if fault else None
        if fault is not None:
            canned = self._canned_fault_reply(fault)
            if canned is not None:
                return canned
        if form is None:
            return _error_reply(400, "invalid_request", f"expected {FORM_CONTENT_TYPE}")
        if endpoint == "password":
            username_or_error = self._check_password(form)
        else:
            username_or_error = self._check_refresh(form)
        if isinstance(username_or_error, _Reply):
            return username_or_error
        body = self._issue_pair(username_or_error, fault)
        for name in fault.omit if fault else ():
            body.pop(name, None)
        reply = _json_reply(200, body)
        if kind is FaultKind.GZIPPED:
            reply = replace(
                reply, body=gzip.compress(reply.body), headers=(*reply.headers, ("Content-Encoding", "gzip"))
            )
        elif kind is FaultKind.ECHO:
            reply = replace(reply, headers=(*reply.headers, *self._echo_headers(form)))
        elif kind is FaultKind.DRIP and fault is not None:
            reply = replace(reply, interval=fault.interval)
        return reply

    def _echo_headers(self, form: Mapping[str, str]) -> list[tuple[str, str]]:
        cookie = uuid.uuid4().hex
        self._cookies_set.append(cookie)
        echoed = [(f"X-Echo-{name.title()}", _header_safe(value)) for name, value in form.items()]
        return [("Set-Cookie", f"session={cookie}; Path=/; HttpOnly; Secure"), *echoed]

    @staticmethod
    def _canned_fault_reply(fault: Fault) -> _Reply | None:
        match fault.kind:
            case FaultKind.DROP_CONNECTION:
                return _DROP
            case FaultKind.HTTP_ERROR | FaultKind.RAW:
                return _Reply(fault.status, fault.body, fault.headers)
            case FaultKind.NOT_JSON:
                return _Reply(200, fault.body, (("Content-Type", "text/plain; charset=utf-8"),))
            case FaultKind.HTML_PAGE:
                return _Reply(200, fault.body, (("Content-Type", "text/html; charset=utf-8"),))
            case FaultKind.HUGE_BODY:
                head, tail = b'{"padding": "', b'"}'
                padding = b"x" * max(0, fault.size - len(head) - len(tail))
                return _Reply(200, head + padding + tail, _JSON)
            case _:
                return None

    def _check_password(self, form: Mapping[str, str]) -> str | _Reply:
        username, password = form.get("username"), form.get("password")
        if not username or password is None:
            return _error_reply(400, "invalid_request", "username and password are required")
        user = self._users.get(username)
        if user is None or user.password != password:
            return _error_reply(401, "invalid_grant", "Invalid user credentials")
        return username

    def _check_refresh(self, form: Mapping[str, str]) -> str | _Reply:
        rejected = _error_reply(self.refresh_error_status, "invalid_grant", "Invalid refresh token")
        grant = self._grant_for(form.get("refresh_token", ""))
        if grant is None or grant.revoked or grant.username not in self._users:
            return rejected
        if self._clock() >= grant.expires_at:
            return rejected
        if self.rotate_refresh_tokens:
            grant.revoked = True
        return grant.username

    def _grant_for(self, token: str) -> _RefreshGrant | None:
        """The grant behind a refresh token this fake signed, whatever its state; None for anything else."""
        if not token or self._signing_key is None:
            return None
        try:
            claims = jwt.decode(
                token,
                self._signing_key.public_key(),
                algorithms=["RS256"],
                audience=AUDIENCE,
                # Time is judged by self._clock, which tests may fake.
                options={"verify_exp": False, "verify_iat": False, "verify_nbf": False},
            )
        except jwt.PyJWTError:
            return None
        jti = claims.get("jti")
        if claims.get("typ") != "Refresh" or not isinstance(jti, str):
            return None
        return self._grants.get(jti)

    def _issue_pair(self, username: str, fault: Fault | None) -> dict[str, Any]:
        kind = fault.kind if fault else None
        now = self._clock()
        access_lifetime, refresh_lifetime = self.access_lifetime, self.refresh_lifetime
        user = self._users[username]
        session = str(uuid.uuid4())
        common = {
            "nbf": 0,
            "iat": int(now),
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user.sub,
            "azp": AUDIENCE,
            "auth_time": 0,
            "session_state": session,
            "resource_access": {},
            "scope": "",
        }
        access_jti, refresh_jti = str(uuid.uuid4()), str(uuid.uuid4())
        access_claims = {
            "jti": access_jti,
            "exp": int(now + access_lifetime),
            **common,
            "typ": "Bearer",
            "acr": "1",
            "allowed-origins": [],
            "name": f"{username} {username}",
            "preferred_username": username,
            "given_name": username,
            "family_name": username,
            "email": username,
        }
        access_expires_at: float | None = now + access_lifetime
        if kind is FaultKind.NO_EXPIRY:
            del access_claims["exp"]
            access_expires_at = None
        if kind is FaultKind.CLAIMS and fault is not None:
            for name, value in fault.claims:
                if value is None:
                    access_claims.pop(name, None)
                else:
                    access_claims[name] = value
            exp = access_claims.get("exp")
            access_expires_at = float(exp) if isinstance(exp, int | float) and exp < 1e300 else None
        access = self._sign(access_claims)
        if kind is FaultKind.ACCESS_NOT_JWT:
            access = f"opaque-{uuid.uuid4().hex}{uuid.uuid4().hex}"
        refresh_claims = {"jti": refresh_jti, "exp": int(now + refresh_lifetime), **common, "typ": "Refresh"}
        refresh = self._sign(refresh_claims)

        self._grants[refresh_jti] = _RefreshGrant(username, now + refresh_lifetime)
        self._issued.append(IssuedToken("access", access, username, access_jti, access_expires_at))
        self._issued.append(IssuedToken("refresh", refresh, username, refresh_jti, now + refresh_lifetime))

        body: dict[str, Any] = {"access_token": access, "refresh_token": refresh, "token_type": "bearer"}
        if kind is not FaultKind.NO_EXPIRY and self.expires_in_style != "omit":
            number = _lifetime_number(access_lifetime)
            body["expires_in"] = str(number) if self.expires_in_style == "string" else number
        return body

    def _sign(self, claims: Mapping[str, Any]) -> str:
        assert self._signing_key is not None
        return jwt.encode(dict(claims), self._signing_key, algorithm="RS256", headers={"kid": self._kid})

    # ------------------------------------------------------------------ TLS

    def _server_tls_context(self) -> ssl.SSLContext:
        if self._tls_files is None:
            directory = Path(tempfile.mkdtemp(prefix="fakeauth-tls-"))
            self._tls_cleanup = weakref.finalize(self, shutil.rmtree, str(directory), ignore_errors=True)
            self._tls_files = write_certificate(directory, self._host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self._tls_files.cert_file, self._tls_files.key_file)
        return context


def write_certificate(directory: Path, host: str = "127.0.0.1") -> ServingCertificate:
    """A CA and the certificate a fake serving on `host` (and 127.0.0.1) presents, in `directory`."""
    return write_serving_certificate(
        directory,
        ca_name="fakeauth test CA",
        common_name="localhost",
        dns_names=["localhost"],
        ip_addresses=sorted({"127.0.0.1", host}),
        validity=datetime.timedelta(days=7),
    )


def _check_endpoint(endpoint: str) -> None:
    if endpoint not in ENDPOINTS:
        raise ValueError(f"unknown endpoint {endpoint!r}; expected one of {ENDPOINTS}")


# --------------------------------------------------------------------------------------------- HTTP layer


class _Server(ThreadingHTTPServer):
    """Tracks open connections so stop() can wake handlers idling on keep-alive sockets."""

    daemon_threads = True
    block_on_close = True  # server_close() joins handler threads
    request_queue_size = 64  # the default 5 drops a burst of connections: the kernel retries after 1 s

    def __init__(
        self, address: tuple[str, int], fake: FakeAuthAPI, tls_context: ssl.SSLContext | None
    ) -> None:
        self.fake = fake
        self.tls_context = tls_context
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        self._closing = False
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind() does a reverse DNS lookup (getfqdn); loopback needs none.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), self.server_address[1]

    def finish_request(self, request: Any, client_address: Any) -> None:
        sock = cast(socket.socket, request)
        sock.settimeout(_Handler.timeout)
        if self.tls_context is not None:
            try:
                sock = self.tls_context.wrap_socket(sock, server_side=True)
            except (ssl.SSLError, OSError) as error:
                log.debug("fakeauth: TLS handshake with %s failed: %s", client_address, error)
                return
        if not self._track(sock):
            sock.close()
            return
        try:
            _Handler(sock, client_address, self)
        finally:
            self._untrack(sock)
            if sock is not request:
                sock.close()

    def close_connections(self) -> None:
        with self._open_lock:
            self._closing = True
            open_sockets = list(self._open)
        for sock in open_sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("fakeauth: error while serving %s", client_address, exc_info=True)

    def _track(self, sock: socket.socket) -> bool:
        with self._open_lock:
            if self._closing:
                return False
            self._open.add(sock)
            return True

    def _untrack(self, sock: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(sock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    server_version = "FakeSimacanAuth/1.0"
    sys_version = ""
    timeout = 30.0
    disable_nagle_algorithm = True  # headers and body go out in two writes; don't wait for delayed ACKs

    def do_POST(self) -> None:
        fake = self.server.fake
        endpoint = fake._route(self.path)
        if endpoint is None:
            self._send(_error_reply(404, "not_found", "no such endpoint"))
            return
        body = self._read_body()
        if body is None:
            return
        form = _parse_form(body) if self.headers.get_content_type() == FORM_CONTENT_TYPE else None
        reply = fake._answer(endpoint, form, str(self.client_address[0]))
        if reply.delay > 0 and fake._stopping.wait(reply.delay):
            reply = _DROP  # shutting down: give up on the delayed answer
        self._send(reply)

    def _not_allowed(self) -> None:
        if self.server.fake._route(self.path) is None:
            self._send(_error_reply(404, "not_found", "no such endpoint"))
        else:
            allow = (("Allow", "POST"),)
            reply = _error_reply(405, "method_not_allowed", "use POST")
            self._send(replace(reply, headers=reply.headers + allow))

    do_GET = do_PUT = do_DELETE = do_PATCH = _not_allowed

    def _read_body(self) -> bytes | None:
        length_header = self.headers.get("Content-Length")
        if length_header is None or not length_header.isdigit():
            self.close_connection = True
            self._send(_error_reply(411, "invalid_request", "Content-Length required"))
            return None
        length = int(length_header)
        if length > MAX_REQUEST_BODY:
            self.close_connection = True
            self._send(_error_reply(413, "invalid_request", "request body too large"))
            return None
        return self.rfile.read(length)

    def _send(self, reply: _Reply) -> None:
        if reply.status is None:
            self.close_connection = True
            return
        if reply.interval > 0:
            self._drip(reply)
            return
        try:
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            if self.close_connection or self.server.fake._stopping.is_set():
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True

    def _drip(self, reply: _Reply) -> None:
        """Write the whole answer one byte per interval, until done or the fake stops."""
        assert reply.status is not None
        self.close_connection = True
        head = [f"HTTP/1.1 {reply.status} {self.responses.get(reply.status, ('',))[0]}"]
        head += [f"{name}: {value}" for name, value in reply.headers]
        head += [f"Content-Length: {len(reply.body)}", "Connection: close", "", ""]
        data = "\r\n".join(head).encode("latin-1") + reply.body
        stopping = self.server.fake._stopping
        try:
            for index in range(len(data)):
                self.wfile.write(data[index : index + 1])
                self.wfile.flush()
                if stopping.wait(reply.interval):
                    return
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            return

    def log_message(self, format: str, *args: Any) -> None:
        # Request lines carry no secrets (credentials travel in the body); keep test output quiet anyway.
        log.debug("fakeauth: " + format, *args)


def _parse_form(body: bytes) -> dict[str, str]:
    pairs = urllib.parse.parse_qsl(body.decode("utf-8", errors="replace"), keep_blank_values=True)
    form: dict[str, str] = {}
    for name, value in pairs:
        form.setdefault(name, value)
    return form


# --------------------------------------------------------------------------------------------- CLI


def _parse_user(text: str) -> tuple[str, str]:
    username, sep, password = text.partition(":")
    if not sep or not username:
        raise argparse.ArgumentTypeError("expected USER:PASSWORD")
    return username, password


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m localenv.fakeauth", description="Serve a fake Simacan Auth API on 127.0.0.1."
    )
    parser.add_argument("--port", type=int, default=0, help="TCP port (default: a free one)")
    parser.add_argument("--user", type=_parse_user, action="append", default=[], metavar="USER:PASSWORD")
    parser.add_argument("--lifetime", type=float, default=DEFAULT_ACCESS_LIFETIME, help="access seconds")
    parser.add_argument("--refresh-lifetime", type=float, default=DEFAULT_REFRESH_LIFETIME)
    parser.add_argument("--expires-in", choices=get_args(ExpiresInStyle), default="string")
    parser.add_argument("--tls", action="store_true", help="serve HTTPS with a throwaway CA")
    args = parser.parse_args(argv)

    fake = FakeAuthAPI(
        dict(args.user),
        access_lifetime=args.lifetime,
        refresh_lifetime=args.refresh_lifetime,
        expires_in_style=args.expires_in,
        tls=args.tls,
        port=args.port,
    )
    done = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: done.set())
    with fake:
        print(fake.base_url, flush=True)
        if args.tls:
            print(f"ca-file: {fake.ca_file}", flush=True)
        done.wait()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
