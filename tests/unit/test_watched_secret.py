"""A target's view of its token Secret through the watch: what a pass learned stands only if the
watch reported nothing else meanwhile, and what one pass heard is its own."""

from __future__ import annotations

from simacan_token_operator.controller.known import KnownSecret, WatchedSecret
from simacan_token_operator.model.tokens import TokenSet

TOKEN = TokenSet("not-a-real-token", None, obtained_at=1_800_000_000.0, expires_at=1_800_003_600.0)


def known(version: str) -> KnownSecret:
    return KnownSecret(version, 0, "Opaque", "fleet-api", b"", TOKEN, "digest")


def test_a_version_heard_during_one_pass_is_not_heard_by_anothers() -> None:
    alpha, beta = WatchedSecret("team-a"), WatchedSecret("team-b")
    alpha.listen()
    beta.listen()
    assert alpha.event("41") is False, "during a pass, the pass decides"

    assert beta.settle(known("7")) is False, "beta heard nothing: its write stands"
    assert beta.known is not None and beta.known.version == "7"
    assert alpha.settle(known("40")) is True, "alpha's Secret changed meanwhile: look again"
    assert alpha.known is None

    beta.listen()
    assert beta.settle(known("8")) is False, "a new pass starts with nothing heard"
    assert beta.event("8") is False, "the echo of its own write is no news"
    assert beta.event("9") is True, "someone else's version is"


def test_a_pass_that_heard_only_its_own_version_keeps_what_it_learned() -> None:
    watched = WatchedSecret("team-a")
    watched.listen()
    watched.event("12")
    assert watched.settle(known("12")) is False
    assert watched.known is not None and watched.known.version == "12"
