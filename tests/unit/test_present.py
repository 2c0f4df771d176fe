"""Which Secrets exist, as the Secret watch tells (controller/known.py, Present): the evidence
that lets a pass create a Secret without reading it first, and its bound."""

from __future__ import annotations

from simacan_token_operator.controller.known import Present


def test_nothing_is_absent_before_the_watch_lists_its_scope() -> None:
    present = Present()
    assert not present.absent("team-a", "api"), "no list yet: read"
    present.seen("team-a", "api", "")
    assert not present.absent("team-a", "api"), "an event before any list proves nothing"


def test_the_list_and_then_the_events_say_what_exists() -> None:
    present = Present()
    present.listed("team-a", {("team-a", "api"): "5"})
    assert not present.absent("team-a", "api")
    assert present.absent("team-a", "other")
    assert not present.absent("team-b", "other"), "team-b is not watched here"

    present.seen("team-a", "api", "")
    present.seen("team-a", "other", "7")
    assert present.absent("team-a", "api"), "deleted"
    assert not present.absent("team-a", "other"), "added"
    present.seen("team-a", "third", None)
    assert not present.absent("team-a", "third"), "a version unknown counts as there"


def test_an_all_namespaces_scope_answers_for_every_namespace() -> None:
    present = Present()
    present.listed(None, {("team-a", "api"): "5"})
    assert not present.absent("team-a", "api")
    assert present.absent("team-b", "api")


def test_a_scope_with_more_secrets_than_the_limit_keeps_none_until_its_next_list() -> None:
    """Anyone may make Secrets: past the limit a pass reads first, as without the watch."""
    present = Present(limit=2)
    present.listed("team-a", {("team-a", "one"): "1", ("team-a", "two"): "2"})
    present.seen("team-a", "one", "4")
    assert present.absent("team-a", "api"), "a change of a Secret kept adds nothing"

    present.seen("team-a", "three", "3")
    assert not present.absent("team-a", "api"), "over the limit by an event: nothing kept"
    present.seen("team-a", "three", "")
    assert not present.absent("team-a", "api"), "still nothing, until a list"

    present.listed("team-a", {("team-a", "one"): "1", ("team-a", "two"): "2", ("team-a", "three"): "3"})
    assert not present.absent("team-a", "api"), "a list over the limit keeps none either"
    present.listed("team-a", {("team-a", "one"): "1"})
    assert present.absent("team-a", "api")
