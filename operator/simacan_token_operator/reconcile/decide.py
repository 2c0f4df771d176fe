"""One reconcile pass: from what was gathered to what to write, what to report and when to look again.

controller-runtime's shape (`Reconcile(request) -> Result{RequeueAfter}`): the pass does no
Kubernetes I/O. The worker (worker.py) gathers the objects before it and performs the result
after it; the pass may only ask the token pool for a token. So a pass can be table-tested in
process with plain dicts, a fake clock and the stand-in Auth API.

Why a credential gets a new token is decided in triggers.py; what the user reads is rendered
by status.py and report.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from simacan_token_operator.model import limits, reasons
from simacan_token_operator.model.body import Body
from simacan_token_operator.model.errors import (
    AuthError,
    PermanentAuthError,
    RefreshDeferred,
    TransientAuthError,
)
from simacan_token_operator.model.schedule import (
    BACKOFF_BASE_SECONDS,
    REFRESH_REQUEST_INTERVAL_SECONDS,
    RESTORE_QUIET_SECONDS,
    jitter_fraction,
    refresh_time,
    restore_delay,
)
from simacan_token_operator.model.spec import (
    REFRESH_REQUESTED_ANNOTATION,
    AuthURLPolicy,
    CredentialSpec,
    LoginSource,
    SpecError,
    oversized_refresh_request,
    parse_spec,
    refresh_request,
)
from simacan_token_operator.model.tokens import TokenSet
from simacan_token_operator.reconcile import consumerstep, credentials, report, tokensecret
from simacan_token_operator.reconcile.consumerstep import ConsumerMemory, Consumers, WorkloadRestart
from simacan_token_operator.reconcile.status import (
    Outcome,
    ReadyState,
    StatusContext,
    ready_reason,
    ready_state,
    render_status,
    status_digest,
)
from simacan_token_operator.reconcile.tokensecret import rfc3339
from simacan_token_operator.reconcile.triggers import Observed, Trigger, why_reissue


@dataclass(frozen=True, slots=True)
class Memory:
    """All a worker remembers between passes; everything else is read afresh each time.

    A fresh process starts from the credential's status (`from_status`), which is why a
    restart neither logs in nor rewrites anything while the stored token is fine.
    """

    login_key: str | None = None
    """Digest of auth URL, username and password the last pass used: a new one means a new password."""
    written_digest: str | None = None
    """Digest of the token last written or adopted: a different one in the Secret came from elsewhere."""
    written_times: tuple[float, float] | None = None
    """When that token was obtained and expires. While the Secret holds it, these times schedule
    it, not the Secret's annotations, which anyone who may edit the Secret can change."""
    written_own: bool = False
    """Whether that token came from this process's pool (not adopted from a Secret): only such a
    token speaks for the account in a ClusterSimacanCredential's status and metrics."""
    user_inputs: tuple[Any, ...] | None = None
    """Generation, credentials Secret version and refresh annotation: when they change, a remembered
    rejection of the login is forgiven."""
    handled_request: str | None = None
    """The last refresh-requested-at value that a new token satisfied."""
    pending_request: tuple[str, float] | None = None
    """A refresh request not yet satisfied, and when it was first seen."""
    honoured_at: float | None = None
    """When the last refresh request was honoured: the next waits REFRESH_REQUEST_INTERVAL_SECONDS."""
    request_deferred_to: float | None = None
    """When the pending refresh request may be honoured, if it must wait: the pass wakes then."""
    status_digest: str | None = None
    """Digest of the status last written: an unchanged status is not patched again."""
    ready: ReadyState | None = None
    """The Ready condition last written, to keep its lastTransitionTime."""
    last_reason: str | None = None
    """The Ready reason last written: Events fire when it changes, not on every pass."""
    ignored_request: str | None = None
    """A refresh-requested-at value too long to act on, already warned about."""
    restores: int = 0
    """Restores of a Secret someone else changed, in a row; they back off (schedule.restore_delay)."""
    last_restore_at: float | None = None
    refused_write: tuple[tuple[Any, ...], str] | None = None
    """The inputs (generation, Secret version) with which the API server refused the Secret
    write, and its message: not tried again until one of them changes."""
    consumers: ConsumerMemory = field(default_factory=ConsumerMemory)
    """The consumer step's own slice (consumerstep.py)."""
    planned_refresh: tuple[float, float] | None = None
    """The expiry of the token last reported valid and the refresh time planned for it: kept for
    that token (TokenSource.refresh_at), so a credential woken then is due then."""

    @classmethod
    def from_status(cls, status: Mapping[str, Any] | None) -> Memory:
        if not status:
            return cls()
        request = status.get("lastRefreshRequest")
        return cls(
            handled_request=request if isinstance(request, str) else None,
            status_digest=status_digest(status),
            ready=ready_state(status),
            last_reason=ready_reason(status),
            consumers=ConsumerMemory.from_status(status),
            planned_refresh=_planned_in(status),
        )


def _planned_in(status: Mapping[str, Any]) -> tuple[float, float] | None:
    expires_at = tokensecret.parse_rfc3339(status.get("expiresAt"))
    planned = tokensecret.parse_rfc3339(status.get("nextRefreshAt"))
    return None if expires_at is None or planned is None else (expires_at, planned)


@dataclass(frozen=True)
class Gathered:
    """The complete input of one pass, as read just before it."""

    credential: Mapping[str, Any]
    """The SimacanCredential: apiVersion, kind, metadata (name, namespace, uid, generation,
    annotations) and spec."""
    target: Mapping[str, Any] | None
    """The token Secret, or None if it does not exist."""
    credentials: Mapping[str, Any] | None
    """The credentials Secret, or None if it does not exist (or the spec names none)."""
    memory: Memory
    now: float
    consumers: Consumers = field(default_factory=Consumers)
    """Restart targets and the namespace's workloads, for the consumer step."""
    credentials_namespace: str | None = None
    """Where the credentials Secret lives when not in the credential's namespace (cluster kind)."""


class TokenSource(Protocol):
    """The shared token pool (auth.pool.TokenPool), as a pass and a worker use it."""

    def attach(self, source: LoginSource, user: str) -> None: ...
    def detach(self, user: str) -> None: ...
    def forgive(self, source: LoginSource) -> None: ...
    def retry_at(self, source: LoginSource, held: TokenSet | None = None) -> float | None: ...
    def current(self, source: LoginSource) -> TokenSet | None: ...
    def forced_refresh_at(self, source: LoginSource, requested_at: float) -> float: ...
    def refresh_at(
        self,
        source: LoginSource,
        token: TokenSet,
        planned: float,
        position: float | None = None,
        kept: float | None = None,
    ) -> float: ...
    async def obtain(
        self,
        source: LoginSource,
        usable: Callable[[TokenSet], bool],
        *,
        held: TokenSet | None = None,
        forced: bool = False,
    ) -> TokenSet: ...


@dataclass(frozen=True)
class Services:
    """What a pass may use besides its input: the shared token pool and the operator's rules."""

    pool: TokenSource
    auth_policy: AuthURLPolicy
    clock: Callable[[], float]
    while_waiting: Callable[[Awaitable[TokenSet]], Awaitable[TokenSet]] = lambda awaitable: awaitable
    """Runs the wait for a token; the worker gives up its share of Kubernetes calls meanwhile."""


@dataclass(frozen=True)
class SecretWrite:
    body: Body
    create: bool
    """POST a new Secret; otherwise PUT with the resourceVersion read, so a concurrent edit gets 409."""
    reason: str
    """The trigger that made the write, for the log."""


@dataclass(frozen=True)
class Result:
    """What to do after a pass, in order: write the Secret, post the Events, patch the status."""

    outcome: Outcome
    memory: Memory
    """To keep once everything was written; a failed write discards it."""
    write: SecretWrite | None = None
    events: tuple[report.Note, ...] = ()
    restarts: tuple[WorkloadRestart, ...] = ()
    """Rollout restarts to perform after the Secret write."""
    status: Body | None = None
    """The status to patch; None when it is what was written last time."""
    attempt: str | None = None
    """How obtaining a token went, for the attempts counter: success, retrying, rejected."""

    @property
    def requeue_at(self) -> float | None:
        return self.outcome.wake_at


async def reconcile(gathered: Gathered, services: Services) -> Result:
    """Bring the token Secret and the status in line with the spec and the token's schedule.

    Two steps, then the report: the token step decides what the Secret holds; the consumer step
    (consumerstep.py) decides, from that token, which workloads to restart or warn about.
    """
    return _concluded(gathered, await _token_step(gathered, services))


async def _token_step(gathered: Gathered, services: Services) -> _Decided:
    meta = gathered.credential["metadata"]
    try:
        spec = parse_spec(meta["name"], meta["namespace"], gathered.credential.get("spec") or {})
    except SpecError as error:
        return _decided(gathered, None, _failure(error))
    if gathered.target is not None and not tokensecret.owned_by(gathered.target, meta["uid"]):
        return _decided(gathered, spec, _conflict(spec, str(gathered.credential.get("kind"))))

    stored, held = _stored_and_held(gathered)
    refused = gathered.memory.refused_write
    if refused is not None and refused[0] == _write_inputs(gathered):
        return _decided(gathered, spec, _keeping_valid_token(_refused_outcome(refused[1]), held))
    try:
        services.auth_policy.check_auth_url(spec.auth_url)
        if spec.suspend:
            suspended = Outcome(False, reasons.SUSPENDED, "refreshing is suspended (spec.suspend)")
            return _decided(gathered, spec, _keeping_valid_token(suspended, held))
        source = credentials.login_source(
            spec, gathered.credentials, gathered.credentials_namespace or spec.namespace
        )
    except SpecError as error:
        return _decided(gathered, spec, _keeping_valid_token(_failure(error), held))

    current = _Pass.start(gathered, services, spec, stored, held, source)
    trigger = why_reissue(current.observe())
    if trigger is None:  # the Secret is as it should be: adopt its token, whoever wrote it
        return current.adopt()
    if current.restoring(trigger) and current.restore_at() > gathered.now:
        return current.restore_deferred(trigger)
    try:
        token = await current.token_for(trigger)
    except AuthError as error:
        return current.failed(error)
    except TimeoutError:
        return current.expired_while_waiting()
    return current.write(trigger, token)


@dataclass(frozen=True)
class _Pass:
    """One pass once the spec, the Secret and the login are known: observe, then act on a trigger."""

    gathered: Gathered
    services: Services
    spec: CredentialSpec
    stored: tokensecret.StoredSecret | None
    held: TokenSet | None
    """The Secret's token while it is unexpired: a failure keeps Ready True on it."""
    source: LoginSource
    memory: Memory
    request: str | None
    """A refresh request not yet handled."""
    pool_token: TokenSet | None
    """The token the pool last obtained for this login: the one every Secret of it should hold."""

    @classmethod
    def start(
        cls,
        gathered: Gathered,
        services: Services,
        spec: CredentialSpec,
        stored: tokensecret.StoredSecret | None,
        held: TokenSet | None,
        source: LoginSource,
    ) -> _Pass:
        services.pool.attach(source, pool_user(gathered.credential))
        pool_token = services.pool.current(source)
        stored, held = _trusted(stored, held, pool_token, gathered.now)
        memory = dataclasses.replace(_note_user_inputs(gathered, services.pool, source), refused_write=None)
        request, memory = _refresh_request(gathered, memory, services.pool, source)
        return cls(gathered, services, spec, stored, held, source, memory, request, pool_token)

    @property
    def stored_own(self) -> bool:
        """Whether the Secret's token came from this process's pool."""
        stored, memory = self.stored, self.memory
        if stored is None or stored.token is None:
            return False
        if self.pool_token is not None and stored.token is self.pool_token:
            return True
        return memory.written_own and stored.token_digest == memory.written_digest

    def next_refresh(self, token: TokenSet) -> float:
        jitter = jitter_fraction(self.gathered.credential["metadata"]["uid"])
        planned = refresh_time(token.obtained_at, token.expires_at, self.spec.refresh_before, jitter)
        if self.spec.refresh_before is not None:  # kept as the user set it: no wave is spread
            return self.services.pool.refresh_at(self.source, token, planned)
        kept = self.memory.planned_refresh
        at = kept[1] if kept is not None and abs(kept[0] - token.expires_at) < 1.0 else None
        return self.services.pool.refresh_at(self.source, token, planned, jitter, at)

    def render(self, token: TokenSet) -> Body:
        return tokensecret.render(self.spec, _owner(self.gathered.credential), token, self.source.account)

    @functools.cached_property
    def as_stored(self) -> Body | None:
        """The Secret as it should be with the token it holds: compared in observe, written
        again by a rewrite that needs no new token."""
        token = self.stored.token if self.stored else None
        return self.render(token) if token else None

    def observe(self) -> Observed:
        """Gather, then decide: the complete input of triggers.py, from the raw objects."""
        stored, memory = self.stored, self.memory
        token = stored.token if stored else None
        return Observed(
            now=self.gathered.now,
            secret_name=self.spec.target_secret,
            stored=stored,
            account=self.source.account,
            login_key=self.source.key,
            last_login_key=memory.login_key,
            written_digest=memory.written_digest,
            pool_token=self.pool_token,
            refresh_at=self.next_refresh(token) if token else None,
            refresh_request=self.request,
            in_sync=self.as_stored is None or tokensecret.in_sync(self.gathered.target or {}, self.as_stored),
        )

    def restoring(self, trigger: Trigger) -> bool:
        """Whether writing means undoing someone else's change to a Secret this process wrote."""
        return trigger.reason in RESTORE_REASONS and self.memory.written_digest is not None

    def _quiet(self) -> bool:
        """No restore for a while: the next one is immediate and counts as the first."""
        last = self.memory.last_restore_at
        return last is None or self.gathered.now - last > RESTORE_QUIET_SECONDS

    def restore_at(self) -> float:
        last = self.memory.last_restore_at
        if last is None or self._quiet():
            return self.gathered.now
        return last + restore_delay(self.memory.restores)

    def restore_deferred(self, trigger: Trigger) -> _Decided:
        at = self.restore_at()
        message = (
            f"{trigger.message} at {rfc3339(at)}: it was changed by someone else {self.memory.restores} "
            "times in a row, so restores back off (up to 5 minutes)"
        )
        outcome = Outcome(False, trigger.reason, message, wake_at=at, failure=True)
        if trigger.quiet and self.held is not None:  # another writer's valid token: all is well meanwhile
            valid = _valid(self.spec, self.held, self.next_refresh(self.held))
            return _decided(self.gathered, self.spec, dataclasses.replace(valid, wake_at=at), self.memory)
        if not trigger.needs_new_token:  # only labels or annotations were changed: the token is ours
            outcome = _keeping_valid_token(outcome, self.held)
        return _decided(self.gathered, self.spec, outcome, self.memory)

    def adopt(self) -> _Decided:
        assert self.stored is not None and self.stored.token is not None
        token = self.stored.token
        memory = dataclasses.replace(
            self.memory,
            login_key=self.source.key,
            written_digest=self.stored.token_digest,
            written_times=(token.obtained_at, token.expires_at),
            written_own=self.stored_own,
        )
        return _decided(self.gathered, self.spec, _valid(self.spec, token, self.next_refresh(token)), memory)

    async def token_for(self, trigger: Trigger) -> TokenSet:
        """The Secret's own token when only the Secret needs rewriting, else one from the pool."""
        stored = self.stored.token if self.stored else None
        if not trigger.needs_new_token and stored is not None:
            return stored
        services = self.services
        wait = _obtain(services, self.source, trigger, self.memory, self.next_refresh, self.held)
        return await services.while_waiting(wait)

    def failed(self, error: AuthError) -> _Decided:
        attempt: str | None = "rejected" if isinstance(error, PermanentAuthError) else "retrying"
        attempt = None if isinstance(error, RefreshDeferred) else attempt
        outcome = _auth_failure(error, self.services, self.source, self.held)
        outcome = _keeping_valid_token(outcome, self.held)
        return _decided(self.gathered, self.spec, outcome, self.memory, attempt=attempt)

    def expired_while_waiting(self) -> _Decided:
        message = (
            "the token in the Secret has expired while a request to the Auth API is still under way; "
            "the Secret is updated as soon as it answers"
        )
        retry_at = self.services.clock() + 1.0
        outcome = Outcome(False, reasons.TOKEN_EXPIRED, message, wake_at=retry_at, failure=True)
        return _decided(self.gathered, self.spec, outcome, self.memory, attempt="retrying")

    def write(self, trigger: Trigger, token: TokenSet) -> _Decided:
        target, pending = self.gathered.target, self.memory.pending_request
        stored = self.stored.token if self.stored else None
        desired = self.as_stored if token is stored and self.as_stored is not None else self.render(token)
        write = SecretWrite(
            body=desired if target is None else tokensecret.merged_for_replace(target, desired),
            create=target is None,
            reason=trigger.reason,
        )
        satisfied = pending is not None and token.obtained_at >= pending[1]
        restoring = self.restoring(trigger)
        memory = dataclasses.replace(
            self.memory,
            restores=(1 if self._quiet() else self.memory.restores + 1)
            if restoring
            else self.memory.restores,
            last_restore_at=self.gathered.now if restoring else self.memory.last_restore_at,
            login_key=self.source.key,
            written_digest=tokensecret.digest(token.access_token),
            written_times=(token.obtained_at, token.expires_at),
            written_own=trigger.needs_new_token or self.stored_own,
            handled_request=pending[0] if satisfied and pending else self.memory.handled_request,
            honoured_at=self.gathered.now if satisfied else self.memory.honoured_at,
        )
        return _decided(
            self.gathered,
            self.spec,
            _valid(self.spec, token, self.next_refresh(token)),
            memory,
            write=write,
            events=report.write_events(trigger, self.gathered.memory.last_reason),
            attempt="success" if trigger.needs_new_token else None,
        )


RESTORE_REASONS = frozenset({reasons.SECRET_MISSING, reasons.SECRET_INVALID, reasons.SECRET_MODIFIED})
"""Triggers that undo another writer's change (deleted, unreadable, replaced or edited Secret)."""

REFUSED_WRITE_STATUSES = frozenset({413, 422})
"""The API server refuses a Secret for what it holds (too large, an invalid label): the same
write would be refused again, so it is reported and not retried until the inputs change."""


def refused_write(gathered: Gathered, why: str) -> Result:
    """The Result to act on when the API server refused the pass's Secret write for its content."""
    meta = gathered.credential["metadata"]
    spec = parse_spec(meta["name"], meta["namespace"], gathered.credential.get("spec") or {})
    _, held = _stored_and_held(gathered)
    message = (
        f"the API server refused to write Secret {spec.target_secret} ({why}); fix spec.secretTemplate, "
        "or remove labels and annotations others added to that Secret"
    )
    memory = dataclasses.replace(gathered.memory, refused_write=(_write_inputs(gathered), message))
    return _concluded(
        gathered, _decided(gathered, spec, _keeping_valid_token(_refused_outcome(message), held), memory)
    )


def _stored_and_held(gathered: Gathered) -> tuple[tokensecret.StoredSecret | None, TokenSet | None]:
    """The owned Secret as read back, and its token while it is unexpired.

    The token this process wrote or adopted is scheduled by the times it remembers, not by the
    Secret's annotations: an edit of those is then out of sync (restored), never a reason to log in.
    """
    if gathered.target is None:
        return None, None
    stored = tokensecret.read_stored(gathered.target, gathered.now)
    memory = gathered.memory
    if stored.token is not None and memory.written_times and stored.token_digest == memory.written_digest:
        obtained_at, expires_at = memory.written_times
        token = dataclasses.replace(stored.token, obtained_at=obtained_at, expires_at=expires_at)
        stored = dataclasses.replace(stored, token=token, annotated_expiry=expires_at)
    return stored, _unexpired(stored.token, gathered.now)


def _trusted(
    stored: tokensecret.StoredSecret | None, held: TokenSet | None, pool_token: TokenSet | None, now: float
) -> tuple[tokensecret.StoredSecret | None, TokenSet | None]:
    """The Secret with the pool's own token, times and all, when it holds that token."""
    if stored is None or stored.token is None or pool_token is None:
        return stored, held
    if stored.token_digest != tokensecret.digest(pool_token.access_token):
        return stored, held
    stored = dataclasses.replace(stored, token=pool_token, annotated_expiry=pool_token.expires_at)
    return stored, _unexpired(pool_token, now)


def _unexpired(token: TokenSet | None, now: float) -> TokenSet | None:
    return token if token is not None and now < token.expires_at else None


def _write_inputs(gathered: Gathered) -> tuple[Any, ...]:
    version = ((gathered.target or {}).get("metadata") or {}).get("resourceVersion")
    return (gathered.credential["metadata"].get("generation"), version)


def _unhandled(memory: Memory) -> str | None:
    """The refresh request waiting to be honoured, for the status."""
    pending = memory.pending_request
    return pending[0] if pending is not None and pending[0] != memory.handled_request else None


def _waking_for_request(outcome: Outcome, memory: Memory, now: float) -> Outcome:
    """A deferred refresh request is honoured by a pass at the moment it may be."""
    at = memory.request_deferred_to
    if at is None or at <= now or (outcome.wake_at is not None and outcome.wake_at <= at):
        return outcome
    return dataclasses.replace(outcome, wake_at=at)


def _refused_outcome(message: str) -> Outcome:
    return Outcome(False, reasons.INVALID_SPEC, message, failure=True)


def _conflict(spec: CredentialSpec, kind: str) -> Outcome:
    message = (
        f"Secret {spec.target_secret} already exists and is not owned by this {kind}; "
        "it is left untouched. Delete that Secret or set spec.secretName to a free name."
    )
    return Outcome(False, reasons.SECRET_CONFLICT, message, failure=True)


def pool_user(credential: Mapping[str, Any]) -> str:
    """Who uses a pool entry: kind, namespace and name, so a SimacanCredential and a
    ClusterSimacanCredential's view of the same name and namespace are two users."""
    meta = credential["metadata"]
    return f"{credential.get('kind')}:{meta['namespace']}/{meta['name']}"


# -- inputs -------------------------------------------------------------------------------------


def _annotation(credential: Mapping[str, Any]) -> str | None:
    return refresh_request(credential["metadata"].get("annotations"))


def _ignored_request(gathered: Gathered, memory: Memory) -> tuple[tuple[report.Note, ...], Memory]:
    """A refresh request too long to act on gets one Warning per value, and nothing else."""
    value = oversized_refresh_request(gathered.credential["metadata"].get("annotations"))
    if value is None or value == memory.ignored_request:
        return (), dataclasses.replace(memory, ignored_request=value)
    message = (
        f"annotation {REFRESH_REQUESTED_ANNOTATION} is longer than {limits.MAX_REFRESH_REQUEST_CHARS} "
        "characters and is ignored; set it to a timestamp, e.g. $(date -u +%FT%TZ)"
    )
    note = report.Note("Warning", reasons.REFRESH_REQUEST_IGNORED, message)
    return (note,), dataclasses.replace(memory, ignored_request=value)


def _note_user_inputs(gathered: Gathered, pool: TokenSource, source: LoginSource) -> Memory:
    """A remembered rejection holds until the user changes the spec, the Secret, or asks again."""
    inputs = (
        gathered.credential["metadata"].get("generation"),
        credentials.version(gathered.credentials),
        _annotation(gathered.credential),
    )
    if gathered.memory.user_inputs is not None and inputs != gathered.memory.user_inputs:
        pool.forgive(source)
    return dataclasses.replace(gathered.memory, user_inputs=inputs)


def _refresh_request(
    gathered: Gathered, memory: Memory, pool: TokenSource, source: LoginSource
) -> tuple[str | None, Memory]:
    """The annotation's value if it asks for a refresh to make now; the memory of the pending one.

    A request not yet handled waits (deferred, never dropped) until a minute after this
    credential's last honoured one and until its account's forced-refresh window ends, unless
    the pool's token was obtained since it was made; meanwhile the pass goes on as without it.
    """
    value = _annotation(gathered.credential)
    if value is None or value == memory.handled_request:
        return None, dataclasses.replace(memory, pending_request=None, request_deferred_to=None)
    pending = memory.pending_request
    if pending is None or pending[0] != value:
        pending = (value, gathered.now)
    honoured = memory.honoured_at
    not_before = max(
        float("-inf") if honoured is None else honoured + REFRESH_REQUEST_INTERVAL_SECONDS,
        pool.forced_refresh_at(source, pending[1]),
    )
    deferred = not_before if gathered.now < not_before else None
    memory = dataclasses.replace(memory, pending_request=pending, request_deferred_to=deferred)
    return (None if deferred is not None else value), memory


def _owner(credential: Mapping[str, Any]) -> dict[str, str]:
    meta = credential["metadata"]
    return {
        "apiVersion": str(credential.get("apiVersion")),
        "kind": str(credential.get("kind")),
        "name": meta["name"],
        "uid": meta["uid"],
    }


# -- tokens -------------------------------------------------------------------------------------


async def _obtain(
    services: Services,
    source: LoginSource,
    trigger: Trigger,
    memory: Memory,
    next_refresh: Callable[[TokenSet], float],
    held: TokenSet | None,
) -> TokenSet:
    """A token from the pool; raises TimeoutError if the held token expires while waiting.

    The pool's token is usable until it is due itself: whether a Secret looks due (by its
    annotations, or because a tenant put an old or self-made token into it) never decides
    whether the account logs in.

    The request itself goes on in the pool (single flight) and a later pass picks up its token.
    """
    clock = services.clock
    forced = trigger.reason == reasons.REFRESH_REQUESTED and memory.pending_request is not None
    if forced and memory.pending_request is not None:
        requested_at = memory.pending_request[1]

        def usable(token: TokenSet) -> bool:
            return token.obtained_at >= requested_at
    else:

        def usable(token: TokenSet) -> bool:
            return clock() < next_refresh(token)

    if held is None:
        return await services.pool.obtain(source, usable, held=held, forced=forced)
    request = asyncio.ensure_future(services.pool.obtain(source, usable, held=held, forced=forced))
    try:
        return await asyncio.wait_for(asyncio.shield(request), max(held.expires_at - clock(), 0.0))
    except TimeoutError:
        request.add_done_callback(_consume)
        raise
    except asyncio.CancelledError:
        request.cancel()
        raise


def _consume(task: asyncio.Future[TokenSet]) -> None:
    """A request that outlived its pass: its failure is the pool's to remember, not an unread error."""
    if not task.cancelled():
        with contextlib.suppress(Exception):
            task.exception()


# -- outcomes -----------------------------------------------------------------------------------


def _failure(error: SpecError) -> Outcome:
    return Outcome(False, error.reason, error.message, failure=True)


def _auth_failure(
    error: AuthError, services: Services, source: LoginSource, held: TokenSet | None
) -> Outcome:
    """`held`: the Secret's unexpired token; while it is about to expire, retries come sooner
    (the pool's retry_at), and the pass wakes for them."""
    if isinstance(error, RefreshDeferred):  # another pass forced a new token a moment ago
        retry_at = services.clock() + (error.retry_after or 0.0)
        message = f"{error.message}; the refresh request is honoured at {rfc3339(retry_at)}"
        return Outcome(False, reasons.TOKEN_VALID, message, wake_at=retry_at)
    if isinstance(error, TransientAuthError):
        delay = error.retry_after or BACKOFF_BASE_SECONDS
        retry_at = services.pool.retry_at(source, held) or services.clock() + delay
        message = f"{error.message}; retrying at {rfc3339(retry_at)}"
        return Outcome(False, error.reason, message, wake_at=retry_at, failure=True)
    return Outcome(False, error.reason, error.message, failure=True)


def _valid(spec: CredentialSpec, token: TokenSet, refresh_at: float) -> Outcome:
    message = (
        f"Secret {spec.target_secret} holds a token valid until {rfc3339(token.expires_at)}; "
        f"next refresh at {rfc3339(refresh_at)}"
    )
    return Outcome(
        True, reasons.TOKEN_VALID, message, token=token, next_refresh=refresh_at, wake_at=refresh_at
    )


def _keeping_valid_token(outcome: Outcome, held: TokenSet | None) -> Outcome:
    """A failure never hides a token that still works: Ready stays True until it expires."""
    if held is None:
        return outcome
    wake = held.expires_at if outcome.wake_at is None else min(outcome.wake_at, held.expires_at)
    return dataclasses.replace(
        outcome,
        ready=True,
        message=f"{outcome.message}; the current token stays valid until {rfc3339(held.expires_at)}",
        token=held,
        wake_at=wake,
    )


@dataclass(frozen=True)
class _Decided:
    """What the token step decided, before the consumer step and the report."""

    spec: CredentialSpec | None
    outcome: Outcome
    memory: Memory
    write: SecretWrite | None
    events: tuple[report.Note, ...]
    attempt: str | None


def _decided(
    gathered: Gathered,
    spec: CredentialSpec | None,
    outcome: Outcome,
    memory: Memory | None = None,
    *,
    write: SecretWrite | None = None,
    events: tuple[report.Note, ...] = (),
    attempt: str | None = None,
) -> _Decided:
    return _Decided(spec, outcome, memory or gathered.memory, write, events, attempt)


def _concluded(gathered: Gathered, decided: _Decided) -> Result:
    """Run the consumer step on the token step's outcome, then render the status and Events."""
    spec, outcome, memory = decided.spec, decided.outcome, decided.memory
    outcome = _waking_for_request(outcome, memory, gathered.now)
    ignored, memory = _ignored_request(gathered, memory)
    events = (*decided.events, *report.problem_events(outcome, gathered.memory.last_reason), *ignored)
    consumed = None
    if spec is not None:
        consumed = consumerstep.step(spec, outcome.token, gathered.consumers, memory.consumers, gathered.now)
        events = (*events, *consumed.events)
        memory = dataclasses.replace(memory, consumers=consumed.memory)
        if consumed.wake_at is not None:
            wake = consumed.wake_at if outcome.wake_at is None else min(outcome.wake_at, consumed.wake_at)
            outcome = dataclasses.replace(outcome, wake_at=wake)
    planned = (
        (outcome.token.expires_at, outcome.next_refresh) if outcome.token and outcome.next_refresh else None
    )
    memory = dataclasses.replace(memory, planned_refresh=planned)  # used on the default schedule only
    context = StatusContext(
        secret_name=spec.target_secret if spec else None,
        generation=gathered.credential["metadata"].get("generation"),
        handled_request=memory.handled_request,
        pending_request=_unhandled(memory),
        previous=memory.ready,
        now=gathered.now,
    )
    status = render_status(
        outcome, context, consumed.conditions if consumed else (), consumed.fields if consumed else {}
    )
    digest = status_digest(status)
    memory = dataclasses.replace(
        memory, status_digest=digest, ready=ready_state(status), last_reason=outcome.reason
    )
    if outcome.token is not None and memory.written_own:
        own = tokensecret.digest(outcome.token.access_token) == memory.written_digest
        outcome = dataclasses.replace(outcome, own=own)
    return Result(
        outcome=outcome,
        memory=memory,
        write=decided.write,
        events=events,
        restarts=consumed.restarts if consumed else (),
        status=None if digest == gathered.memory.status_digest else status,
        attempt=decided.attempt,
    )
