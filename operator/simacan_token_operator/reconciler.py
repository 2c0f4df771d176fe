"""One SimacanCredential's lifecycle: observe, decide, act, report.

Each credential gets one asyncio task that sleeps until its next refresh, a retry, or a
nudge from a watch event. Sleeping tasks cost a few KiB, unlike a kopf daemon per object.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import PermanentAuthError, TransientAuthError
from .kube import Kube, KubeError, ObjectRef
from .metrics import Metrics
from .pool import TokenPool
from .schedule import backoff_delay, jitter_fraction, refresh_time
from .spec import (
    REFRESH_REQUESTED_ANNOTATION,
    AuthURLPolicy,
    CredentialSpec,
    LoginSource,
    SpecError,
    parse_spec,
)
from .status import SUSPENDED, TOKEN_VALID, Outcome, fingerprint, ready_reason, ready_since, render_status
from .tokens import TokenSet
from .tokensecret import (
    decoded_value,
    digest,
    in_sync,
    merged_for_replace,
    owned_by,
    read_stored,
    render,
    rfc3339,
)
from .triggers import Observed, Trigger, why_reissue

logger = logging.getLogger(__name__)

ROUTINE_TRIGGERS = frozenset({"Expiring"})
CONFLICT_RETRY_SECONDS = 0.5
RECONCILE_CONCURRENCY = 16


@dataclass
class Runtime:
    """What every worker shares."""

    kube: Kube
    pool: TokenPool
    policy: AuthURLPolicy
    metrics: Metrics
    clock: Callable[[], float] = time.time
    gate: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(RECONCILE_CONCURRENCY))
    """Bounds concurrent reconciles: a start with thousands of credentials stays a steady trickle
    of API calls instead of a burst that inflates memory for good."""


class CredentialProblem(Exception):
    """A user-fixable problem found while reading inputs; becomes the Ready condition."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


@dataclass
class Watched:
    """Secret names a worker depends on, so the controller can route Secret events to it."""

    credentials: str | None = None
    target: str | None = None


@dataclass
class CredentialWorker:
    namespace: str
    name: str
    runtime: Runtime
    body: Mapping[str, Any]
    watched: Watched = field(default_factory=Watched)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None
    _source_key: str | None = None
    _written_digest: str | None = None
    _inputs: tuple[Any, ...] | None = None
    _handled_request: str | None = None
    _request_seen: tuple[str, float] | None = None
    _status_fingerprint: str | None = None
    _ready_since: dict[str, Any] = field(default_factory=dict)
    _last_reason: str | None = None
    _errors: int = 0
    _credentials_version: str | None = None
    due_at: float | None = None
    """When this worker should next run; health checks flag it if it is long overdue."""
    on_watch: Callable[[CredentialWorker], None] | None = None

    def __post_init__(self) -> None:
        status = self.body.get("status") or {}
        self._status_fingerprint = fingerprint(status) if status else None
        self._ready_since = ready_since(status)
        self._handled_request = status.get("lastRefreshRequest")
        self._last_reason = ready_reason(status)
        self.body = {k: v for k, v in self.body.items() if k != "status"}

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def start(self) -> None:
        # A fresh context: started from a kopf handler, the task would otherwise inherit kopf's
        # context variables and keep that event's body, cause and logger alive for good.
        self._task = asyncio.create_task(
            self._run(), name=f"credential:{self.key}", context=contextvars.Context()
        )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.runtime.pool.detach(self.key)
        self.runtime.metrics.forget(self.namespace, self.name)

    def _set_watched(self, watched: Watched) -> None:
        if watched != self.watched:
            self.watched = watched
            if self.on_watch is not None:
                self.on_watch(self)

    def nudge(self, body: Mapping[str, Any] | None = None) -> None:
        if body is not None:
            self.body = body
        self._wake.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            async with self.runtime.gate:
                wake_at = await self._reconcile_or_back_off()
            self.due_at = wake_at
            # A timer handle rather than asyncio.wait_for: no extra Task per sleep, per credential.
            timer = None
            if wake_at is not None:
                timer = loop.call_later(max(wake_at - self.runtime.clock(), 0.0), self._wake.set)
            try:
                await self._wake.wait()
            finally:
                if timer is not None:
                    timer.cancel()

    async def _reconcile_or_back_off(self) -> float | None:
        try:
            wake_at = await self.reconcile()
        except Exception as error:
            self._errors += 1
            delay = backoff_delay(self._errors, jitter_fraction(f"{self.key}:{self._errors}"))
            if isinstance(error, KubeError):  # expected: the message names the call and the status
                logger.warning("%s: %s; retrying in %.0fs", self.key, error, delay)
            else:
                logger.exception("%s: unexpected error; retrying in %.0fs", self.key, delay)
            return self.runtime.clock() + delay
        self._errors = 0
        return wake_at

    # -- one pass -------------------------------------------------------------------------------

    async def reconcile(self) -> float | None:
        """Bring the Secret and status in line; return when to look again (None: on events only)."""
        body = self.body
        rt = self.runtime
        try:
            spec = parse_spec(self.name, self.namespace, body.get("spec") or {})
        except SpecError as error:
            self._set_watched(Watched())
            return await self._settle(Outcome(False, error.reason, error.message, failure=True), None)
        self._set_watched(Watched(spec.credentials_secret, spec.target_secret))

        target = await rt.kube.read_secret(self.namespace, spec.target_secret)
        uid = body["metadata"]["uid"]
        if target is not None and not owned_by(target, uid):
            return await self._settle(
                Outcome(
                    False,
                    "SecretConflict",
                    f"Secret {spec.target_secret} already exists and is not owned by this SimacanCredential; "
                    "it is left untouched. Delete that Secret or set spec.secretName to a free name.",
                    failure=True,
                ),
                spec,
            )
        stored = read_stored(target) if target is not None else None
        now = rt.clock()
        held = stored.token if stored and stored.token and now < stored.token.expires_at else None
        jitter = jitter_fraction(uid)

        def next_refresh(token: TokenSet) -> float:
            return refresh_time(token.obtained_at, token.expires_at, spec.refresh_before, jitter)

        try:
            rt.policy.check_auth_url(spec.auth_url)
        except SpecError as error:
            return await self._settle(self._held(held, error.reason, error.message), spec)
        if spec.suspend:
            outcome = self._held(held, SUSPENDED, "refreshing is suspended (spec.suspend)", failure=False)
            return await self._settle(outcome, spec)
        try:
            source = await self._login_source(spec)
        except CredentialProblem as problem:
            return await self._settle(self._held(held, problem.reason, problem.message), spec)

        rt.pool.attach(source, self.key)
        self._forgive_on_user_change(source, spec)
        restarted_or_same = self._source_key in (None, source.key)
        if held is not None and stored is not None and stored.account == source.account and restarted_or_same:
            rt.pool.seed(source, held)

        request = self._pending_refresh_request(now)
        observed = Observed(
            now=now,
            secret_name=spec.target_secret,
            secret_exists=target is not None,
            stored=stored.token if stored else None,
            stored_account=stored.account if stored else None,
            account=source.account,
            refresh_at=next_refresh(stored.token) if stored and stored.token else None,
            password_changed=self._source_key is not None and self._source_key != source.key,
            refresh_request=request,
            token_replaced=(
                self._written_digest is not None
                and stored is not None
                and stored.token_digest != self._written_digest
            ),
            in_sync=(
                stored is None
                or stored.token is None
                or in_sync(target or {}, render(spec, self._owner(), stored.token, source.account))
            ),
        )
        trigger = why_reissue(observed)
        if trigger is None:
            assert stored is not None and stored.token is not None
            self._source_key = source.key
            self._written_digest = stored.token_digest
            refresh_at = next_refresh(stored.token)
            return await self._settle(self._valid(spec, stored.token, refresh_at), spec)

        if trigger.needs_new_token or stored is None or stored.token is None:
            token = await self._obtain(source, trigger, next_refresh)
            if isinstance(token, Outcome):
                return await self._settle(self._with_held(token, held), spec)
        else:
            token = stored.token

        desired = render(spec, self._owner(), token, source.account)
        try:
            if target is None:
                await rt.kube.create_secret(self.namespace, desired)
            else:
                await rt.kube.replace_secret(self.namespace, merged_for_replace(target, desired))
        except KubeError as error:
            if error.status in (404, 409):  # raced with another writer: read again shortly
                return rt.clock() + CONFLICT_RETRY_SECONDS
            raise
        rt.metrics.refreshes.labels("success").inc()
        self._source_key = source.key
        self._written_digest = digest(token.access_token)
        if self._request_seen is not None and token.obtained_at >= self._request_seen[1]:
            self._handled_request = self._request_seen[0]
        logger.info(
            "%s: wrote Secret %s (%s); valid until %s",
            self.key,
            spec.target_secret,
            trigger.reason,
            rfc3339(token.expires_at),
        )
        await self._announce_write(trigger)
        return await self._settle(self._valid(spec, token, next_refresh(token)), spec)

    # -- inputs ---------------------------------------------------------------------------------

    async def _login_source(self, spec: CredentialSpec) -> LoginSource:
        secret = await self.runtime.kube.read_secret(self.namespace, spec.credentials_secret)
        ref = f"Secret {self.namespace}/{spec.credentials_secret}"
        if secret is None:
            raise CredentialProblem(
                "CredentialsSecretNotFound",
                f"{ref} (spec.credentialsSecretRef) does not exist; create it with keys "
                f"{spec.username_key!r} and {spec.password_key!r}",
            )
        self._credentials_version = (secret.get("metadata") or {}).get("resourceVersion")
        values: dict[str, str] = {}
        for key, field_name in ((spec.username_key, "usernameKey"), (spec.password_key, "passwordKey")):
            value = (decoded_value(secret.get("data") or {}, key) or "").strip()
            if not value:
                raise CredentialProblem(
                    "CredentialsKeyMissing",
                    f"{ref} has no non-empty key {key!r} (spec.credentialsSecretRef.{field_name})",
                )
            values[key] = value
        return LoginSource(spec.auth_url, values[spec.username_key], values[spec.password_key])

    def _forgive_on_user_change(self, source: LoginSource, spec: CredentialSpec) -> None:
        """A remembered rejection holds until the user changes the spec, the Secret, or asks again."""
        inputs = (
            self.body["metadata"].get("generation"),
            self._credentials_version,
            self._annotation(),
        )
        if self._inputs is not None and inputs != self._inputs:
            self.runtime.pool.forgive(source)
        self._inputs = inputs

    def _annotation(self) -> str | None:
        value = (self.body["metadata"].get("annotations") or {}).get(REFRESH_REQUESTED_ANNOTATION)
        return value if isinstance(value, str) and value else None

    def _pending_refresh_request(self, now: float) -> str | None:
        value = self._annotation()
        if value is None or value == self._handled_request:
            return None
        if self._request_seen is None or self._request_seen[0] != value:
            self._request_seen = (value, now)
        return value

    def _owner(self) -> dict[str, str]:
        meta = self.body["metadata"]
        return {
            "apiVersion": str(self.body.get("apiVersion")),
            "kind": str(self.body.get("kind")),
            "name": self.name,
            "uid": meta["uid"],
        }

    # -- tokens ---------------------------------------------------------------------------------

    async def _obtain(
        self, source: LoginSource, trigger: Trigger, next_refresh: Callable[[TokenSet], float]
    ) -> TokenSet | Outcome:
        rt = self.runtime
        if trigger.reason == "RefreshRequested" and self._request_seen is not None:
            requested_at = self._request_seen[1]

            def usable(token: TokenSet) -> bool:
                return token.obtained_at >= requested_at
        else:

            def usable(token: TokenSet) -> bool:
                return rt.clock() < next_refresh(token)

        try:
            return await rt.pool.obtain(source, usable)
        except TransientAuthError as error:
            rt.metrics.refreshes.labels("retrying").inc()
            retry_at = rt.pool.retry_at(source) or rt.clock() + 5.0
            return Outcome(
                False,
                error.reason,
                f"{error.message}; retrying at {rfc3339(retry_at)}",
                wake_at=retry_at,
                failure=True,
            )
        except PermanentAuthError as error:
            rt.metrics.refreshes.labels("rejected").inc()
            return Outcome(False, error.reason, error.message, failure=True)

    # -- reporting ------------------------------------------------------------------------------

    def _valid(self, spec: CredentialSpec, token: TokenSet, refresh_at: float) -> Outcome:
        message = (
            f"Secret {spec.target_secret} holds a token valid until {rfc3339(token.expires_at)}; "
            f"next refresh at {rfc3339(refresh_at)}"
        )
        return Outcome(True, TOKEN_VALID, message, token=token, next_refresh=refresh_at, wake_at=refresh_at)

    def _held(self, held: TokenSet | None, reason: str, message: str, failure: bool = True) -> Outcome:
        return self._with_held(Outcome(False, reason, message, failure=failure), held)

    def _with_held(self, outcome: Outcome, held: TokenSet | None) -> Outcome:
        """A failure never hides a token that still works: Ready stays True until it expires."""
        if held is None:
            return outcome
        wake = held.expires_at if outcome.wake_at is None else min(outcome.wake_at, held.expires_at)
        return Outcome(
            True,
            outcome.reason,
            f"{outcome.message}; the current token stays valid until {rfc3339(held.expires_at)}",
            token=held,
            wake_at=wake,
            failure=outcome.failure,
        )

    async def _announce_write(self, trigger: Trigger) -> None:
        recovering = self._last_reason not in (None, TOKEN_VALID, SUSPENDED)
        if recovering:
            await self._event(
                "Normal",
                "Recovered",
                f"{trigger.message}; the previous problem ({self._last_reason}) is resolved",
            )
        elif self._last_reason is None:
            await self._event("Normal", "Issued", "issued the first token")
        elif trigger.reason not in ROUTINE_TRIGGERS:
            await self._event("Normal", trigger.reason, trigger.message)

    async def _event(self, type_: str, reason: str, message: str) -> None:
        meta = self.body["metadata"]
        ref = ObjectRef(
            self.namespace,
            self.name,
            meta["uid"],
            str(self.body.get("apiVersion")),
            str(self.body.get("kind")),
        )
        try:
            await self.runtime.kube.post_event(ref, type_, reason, message)
        except KubeError as error:
            logger.warning("%s: could not post Event %s: %s", self.key, reason, error)

    async def _settle(self, outcome: Outcome, spec: CredentialSpec | None) -> float | None:
        """Write status and Events for the outcome and publish metrics; returns when to wake."""
        rt = self.runtime
        if outcome.failure and outcome.reason != self._last_reason:
            await self._event("Warning", outcome.reason, outcome.message)
        self._last_reason = outcome.reason
        status = render_status(
            outcome,
            secret_name=spec.target_secret if spec else None,
            generation=self.body["metadata"].get("generation"),
            handled_request=self._handled_request,
            previous=self._ready_since,
            now=rt.clock(),
        )
        written = fingerprint(status)
        if written != self._status_fingerprint:
            try:
                await rt.kube.patch_status(self.namespace, self.name, status)
            except KubeError as error:
                if error.status != 404:  # 404: deleted meanwhile; the watch will stop us
                    raise
            self._status_fingerprint, self._ready_since = written, ready_since(status)
        labels = (self.namespace, self.name)
        rt.metrics.ready.labels(*labels).set(1 if outcome.ready else 0)
        if outcome.token is not None:
            rt.metrics.expiry.labels(*labels).set(outcome.token.expires_at)
        if outcome.next_refresh is not None:
            rt.metrics.next_refresh.labels(*labels).set(outcome.next_refresh)
        return outcome.wake_at
