"""What this process knows Secrets hold without reading them again, kept true by the Secret watch.

Every write of a Secret gives it a new resourceVersion, and the metadata-only Secret watch
(kube/secretwatch.py) reports each one. So while the watch reports no other version of a Secret
than the one this process last wrote or read, the Secret still holds what it held then, and a
pass need not read it again: a refresh costs the Secret write and the status patch, nothing more.

What is kept is small, and only for what the operator serves. Per token Secret (one per target):
its bounded metadata and a digest of its data, which the pass renders again from the token it
wrote or adopted (a render that does not match the digest means: read it). Per credentials
Secret: only the keys the specs name, shared by every credential that uses it. Never a
label-selected cache of Secrets: anyone may label a 1 MiB Secret.

Trust needs a live watch. Nothing is trusted before the watch has listed its scope (an epoch per
scope: None until then), and a gap in the watch (410 Gone, an outage) is closed by one list of the
scope, whose versions keep what is still true and drop the rest (`relisted`). A version heard
while a read or write was under way may be newer than what it returned: then nothing is kept.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import zlib
from collections.abc import Awaitable, Callable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from typing import Any

from simacan_token_operator.model.clusterspec import CLUSTER_KIND
from simacan_token_operator.model.spec import API_VERSION, KIND, CredentialSpec
from simacan_token_operator.model.tokens import TokenSet
from simacan_token_operator.reconcile.tokensecret import (
    ACCOUNT_ANNOTATION,
    EXPIRES_AT_ANNOTATION,
    MANAGED_BY,
    MANAGED_BY_LABEL,
    REFRESHED_AT_ANNOTATION,
    data_digest,
    render_data,
)

Versions = Mapping[tuple[str, str], str]
"""(namespace, name) -> resourceVersion, as a list of a watched scope found them."""

KEPT_METADATA = ("name", "namespace", "uid", "resourceVersion", "labels", "annotations", "ownerReferences")
"""What a pass reads of a token Secret's metadata (owner, our labels and annotations, others' to keep)."""
MAX_KEPT_METADATA_BYTES = 16 * 1024
"""Metadata larger than this (someone annotated our Secret heavily) is not kept: read each time."""
MAX_HEARD = 8
"""Versions remembered while a read is under way; more than this counts as a change."""
METADATA_DICTIONARY = json.dumps(
    {
        "name": "",
        "namespace": "",
        "uid": "",
        "resourceVersion": "",
        "labels": {MANAGED_BY_LABEL: MANAGED_BY},
        "annotations": {EXPIRES_AT_ANNOTATION: "", REFRESHED_AT_ANNOTATION: "", ACCOUNT_ANNOTATION: ""},
        "ownerReferences": [
            {"apiVersion": API_VERSION, "kind": KIND, "name": "", "uid": "", "controller": True},
            {"kind": CLUSTER_KIND, "blockOwnerDeletion": True},
        ],
    },
    separators=(",", ":"),
).encode()
"""What the metadata of the operator's token Secrets has in common, as zlib's preset dictionary:
kept metadata packs into about 200 bytes instead of about 700, for each of thousands of targets."""
CHANGED = "\x00changed"
"""A version no Secret has: what `heard` records for an unknown or an overflowing change."""


class Epochs:
    """Per watched scope, how many times it was listed; None while it never was (trust nothing)."""

    def __init__(self) -> None:
        self._epochs: dict[str | None, int] = {}

    def of(self, namespace: str) -> int | None:
        """The epoch of the scope that watches `namespace` (its own, or all namespaces)."""
        own = self._epochs.get(namespace)
        return own if own is not None else self._epochs.get(None)

    def listed(self, scope: str | None) -> int:
        self._epochs[scope] = self._epochs.get(scope, 0) + 1
        return self._epochs[scope]


def in_scope(namespace: str, scope: str | None) -> bool:
    return scope is None or namespace == scope


def heard_only(heard: AbstractSet[str], version: str | None) -> bool:
    """Whether every version heard during a read or write is the one it returned."""
    return version is not None and heard <= {version}


def note(heard: set[str] | None, version: str | None) -> None:
    """Remember a version heard while a read or write is under way."""
    if heard is not None:
        heard.add(CHANGED if version is None or len(heard) >= MAX_HEARD else version)


LISTENING: frozenset[str] = frozenset()
"""A pass under way that has heard nothing yet: shared (and frozen, so it cannot be added to), so
that thousands of waiting passes keep no empty set each; `event` makes a set of its own."""


class WatchedSecret:
    """One target's token Secret as the watch vouches for it: what the last pass wrote or read,
    and the versions the watch reported while a pass was under way."""

    __slots__ = ("_heard", "known", "namespace")

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.known: KnownSecret | None = None
        self._heard: set[str] | frozenset[str] | None = None

    def event(self, version: str | None) -> bool:
        """The watch reported `version` ("" deleted, None unknown); True when that may be news
        (look again), False for the version this process wrote or read (its own write's echo).
        During a pass the pass decides, when it ends (`settle`)."""
        if self._heard is not None:
            heard = self._heard if isinstance(self._heard, set) else set()
            self._heard = heard
            note(heard, version)
            return False
        known = self.known
        if known is not None and version is not None and version == known.version:
            return False
        self.known = None
        return True

    def relisted(self, versions: Versions, epoch: int | None) -> bool:
        """After a gap in the watch: True if the Secret changed meanwhile (look again)."""
        known = self.known
        if known is None:
            return False
        if epoch is not None and versions.get((self.namespace, known.name)) == known.version:
            self.known = known.renewed(epoch)
            return False
        self.known = None
        return True

    def listen(self) -> None:
        """A pass starts: versions heard from now on are the pass's to judge."""
        self._heard = LISTENING

    def settle(self, learned: KnownSecret | None) -> bool:
        """A pass ended having learned `learned`: keep it only if nothing else was heard
        meanwhile. True when the Secret changed meanwhile (look again)."""
        heard, self._heard = self._heard or set(), None
        self.known = learned if learned is not None and heard_only(heard, learned.version) else None
        return bool(heard) and self.known is None


@dataclass(frozen=True, slots=True)
class KnownSecret:
    """A token Secret as this process last wrote or read it, without its data."""

    version: str
    epoch: int
    type: str
    name: str
    packed_metadata: bytes
    """Its kept metadata, as compact JSON packed with METADATA_DICTIONARY: about 200 bytes where
    the dicts would take a few kilobytes, for each of thousands of targets; unpacked only when a
    pass reuses it."""
    token: TokenSet
    """The token its data was rendered from (also the pass's outcome: no extra memory)."""
    digest: str
    """data_digest of its data."""

    def body(self, spec: CredentialSpec) -> dict[str, Any] | None:
        """The Secret as read, its data rendered again; None if that render is not what it holds
        (the spec's templates changed, say): then it is read."""
        data = render_data(spec, self.token)
        if data_digest(data) != self.digest:
            return None
        meta = unpack(self.packed_metadata)
        return {"apiVersion": "v1", "kind": "Secret", "type": self.type, "metadata": meta, "data": data}

    def renewed(self, epoch: int) -> KnownSecret:
        return dataclasses.replace(self, epoch=epoch)


def known_secret(
    secret: Mapping[str, Any] | None, token: TokenSet | None, spec: CredentialSpec | None, epoch: int | None
) -> KnownSecret | None:
    """What to keep of a token Secret just written or read; None when it cannot be rendered again
    from `token` or its metadata is too large to keep."""
    if secret is None or token is None or spec is None or epoch is None:
        return None
    meta = secret.get("metadata") or {}
    version = meta.get("resourceVersion")
    if not isinstance(version, str) or not version:
        return None
    digest = data_digest(secret.get("data"))
    if digest != data_digest(render_data(spec, token)):
        return None
    kept = json.dumps(
        {key: meta[key] for key in KEPT_METADATA if key in meta}, separators=(",", ":")
    ).encode()
    if len(kept) > MAX_KEPT_METADATA_BYTES:
        return None
    kept = pack(kept)
    name = str(meta.get("name"))
    return KnownSecret(version, epoch, str(secret.get("type") or "Opaque"), name, kept, token, digest)


def pack(metadata_json: bytes) -> bytes:
    packer = zlib.compressobj(1, zdict=METADATA_DICTIONARY)
    return packer.compress(metadata_json) + packer.flush()


def unpack(packed: bytes) -> dict[str, Any]:
    unpacker = zlib.decompressobj(zdict=METADATA_DICTIONARY)
    meta: dict[str, Any] = json.loads(unpacker.decompress(packed) + unpacker.flush())
    return meta


@dataclass(frozen=True, slots=True)
class _Login:
    version: str | None
    """None: the Secret did not exist."""
    epoch: int
    keys: frozenset[str]
    secret: Mapping[str, Any] | None


class Logins:
    """The credentials Secrets, only the keys the specs name, by (namespace, name): read once per
    version however many credentials use one, and only one read of each at a time."""

    def __init__(self, epochs: Epochs) -> None:
        self._epochs = epochs
        self._entries: dict[tuple[str, str], _Login] = {}
        self._reading: dict[tuple[str, str], tuple[asyncio.Future[None], set[str]]] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def read(
        self,
        namespace: str,
        name: str,
        keys: tuple[str, ...],
        fetch: Callable[[tuple[str, ...]], Awaitable[Mapping[str, Any] | None]],
    ) -> Mapping[str, Any] | None:
        """The Secret with `keys` (as `fetch(keys)` returns it), read only when not known."""
        where = (namespace, name)
        while True:
            entry, epoch = self._entries.get(where), self._epochs.of(namespace)
            if entry is not None and epoch is not None and entry.epoch == epoch and entry.keys >= set(keys):
                return entry.secret
            reading = self._reading.get(where)
            if reading is None:
                break
            await asyncio.shield(reading[0])  # another pass reads it: then look again
        wanted = tuple(sorted(set(keys) | (entry.keys if entry is not None else frozenset())))
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heard: set[str] = set()
        self._reading[where] = (done, heard)
        try:
            secret = await fetch(wanted)
            version = _version(secret)
            if epoch is not None and epoch == self._epochs.of(namespace) and heard_only(heard, version or ""):
                self._entries[where] = _Login(version, epoch, frozenset(wanted), secret)
            else:
                self._entries.pop(where, None)
            return secret
        finally:
            del self._reading[where]
            done.set_result(None)

    def seen(self, namespace: str, name: str, version: str | None) -> bool:
        """The watch reported `version` of a Secret ("" deleted, None unknown); False when that is
        the version read (nothing new), True when it may be news."""
        where = (namespace, name)
        reading = self._reading.get(where)
        if reading is not None:
            note(reading[1], version)
        entry = self._entries.get(where)
        if entry is not None and version is not None and entry.version == version:
            return False
        self._entries.pop(where, None)
        return True

    def relisted(self, scope: str | None, versions: Versions) -> None:
        """After a gap: keep what the list shows unchanged (with the new epoch), drop the rest."""
        for where, entry in list(self._entries.items()):
            if not in_scope(where[0], scope):
                continue
            epoch = self._epochs.of(where[0])
            if epoch is not None and versions.get(where) == entry.version:
                self._entries[where] = dataclasses.replace(entry, epoch=epoch)
            else:
                del self._entries[where]


def _version(secret: Mapping[str, Any] | None) -> str | None:
    if secret is None:
        return None
    value = (secret.get("metadata") or {}).get("resourceVersion")
    return value if isinstance(value, str) else None


MAX_PRESENT = 100_000
"""Secrets per watched scope whose existence is kept, at about 60 bytes each: past this (anyone
may make Secrets) the scope keeps none, and passes read a Secret before they create it."""


class Present:
    """Which Secrets exist, as the watch's lists and events tell: a hash of namespace and name
    each, per scope. A pass may then create a token Secret the watch never reported without
    reading it first: at a start of thousands, a 404 read per credential saved. Evidence, not
    proof (a Secret made a moment ago may not be reported yet): a create never overwrites, its
    409 makes the pass read. A hash collision only costs that read."""

    def __init__(self, limit: int = MAX_PRESENT) -> None:
        self._limit = limit
        self._scopes: dict[str | None, set[int] | None] = {}
        """None: over the limit, nothing kept until the next list."""

    def listed(self, scope: str | None, versions: Versions) -> None:
        self._scopes[scope] = {hash(where) for where in versions} if len(versions) <= self._limit else None

    def seen(self, namespace: str, name: str, version: str | None) -> None:
        """The watch reported `version` ("" deleted, None unknown: counted as there)."""
        scope = self._scope(namespace)
        kept = self._scopes.get(scope)
        if kept is None:
            return
        where = hash((namespace, name))
        if version == "":
            kept.discard(where)
        elif where not in kept:
            if len(kept) < self._limit:
                kept.add(where)
            else:
                self._scopes[scope] = None

    def absent(self, namespace: str, name: str) -> bool:
        """True when the watch has listed the namespace and knows of no such Secret."""
        kept = self._scopes.get(self._scope(namespace))
        return kept is not None and hash((namespace, name)) not in kept

    def _scope(self, namespace: str) -> str | None:
        """The scope that watches `namespace`: its own, or all namespaces."""
        return namespace if namespace in self._scopes else None


class Knowledge:
    """What the workers share: the scopes' epochs, the credentials Secrets read, and which
    Secrets exist."""

    def __init__(self) -> None:
        self.epochs = Epochs()
        self.logins = Logins(self.epochs)
        self.present = Present()
