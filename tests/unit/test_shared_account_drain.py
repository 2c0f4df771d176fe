"""No tenant drains a shared account: due-ness comes from the token the operator obtained.

Two namespaces log in as one account (one pool entry). The tenant of the second edits its token
Secret's annotations, puts self-made tokens into it and deletes it; none of that may make the
operator call the Auth API, and once the tenant stops the Secret holds the pool's token again.
"""

from __future__ import annotations

import base64
import copy
from typing import Any

import jwt

from simacan_token_operator.reconcile.tokensecret import (
    EXPIRES_AT_ANNOTATION,
    REFRESHED_AT_ANNOTATION,
    rfc3339_precise,
)
from tests.unit.test_reconcile_pass import NS, OTHER_NS, World, clock, fake_auth, world

FIXTURES = (fake_auth, clock, world)


def self_made(exp: float, now: float) -> str:
    return jwt.encode({"exp": int(exp), "iat": int(now), "sub": "tenant"}, "t" * 32, algorithm="HS256")


def tamper(world: World, change: Any, namespace: str = OTHER_NS) -> None:
    """The tenant's edit of its token Secret, through the API (a new resourceVersion)."""
    secret = copy.deepcopy(world.kube.secrets[(namespace, "fleet-api")])
    change(secret)
    world.kube.put_secret(namespace, secret)


def edited_annotations(**values: float) -> Any:
    keys = {"expires": EXPIRES_AT_ANNOTATION, "refreshed": REFRESHED_AT_ANNOTATION}

    def change(secret: dict[str, Any]) -> None:
        for key, at in values.items():
            secret["metadata"]["annotations"][keys[key]] = rfc3339_precise(at)

    return change


def token(value: str) -> Any:
    def change(secret: dict[str, Any]) -> None:
        secret["data"]["token"] = base64.b64encode(value.encode()).decode()

    return change


async def two_tenants(world: World) -> None:
    for namespace in (NS, OTHER_NS):
        world.login_secret(namespace=namespace)
        world.credential(namespace=namespace)
        await world.run(namespace=namespace)
    assert world.fake_auth.count() == 1, "one account, one login"


def the_pool_token(world: World) -> bool:
    return world.token(namespace=OTHER_NS) == world.token(namespace=NS)


async def test_edited_annotations_cause_no_login_and_are_restored(world: World) -> None:
    await two_tenants(world)
    now = world.clock.now
    # Due at once (refreshed long ago, expiring now), then "valid" longer than the pool's token
    # lives (but not past the JWT's exp, which the old freshness rule then could not beat).
    exp = jwt.decode(world.token(), options={"verify_signature": False})["exp"]
    edits = [
        edited_annotations(refreshed=now - 7200, expires=now + 1),
        edited_annotations(expires=exp),
        edited_annotations(refreshed=now - 1, expires=exp),
    ]
    for edit in edits:
        tamper(world, edit)
        world.clock.advance(400)  # past any restore backoff: each edit is restored
        await world.run(namespace=OTHER_NS)
        assert the_pool_token(world)
        secret = world.kube.secrets[(OTHER_NS, "fleet-api")]
        reference = world.kube.secrets[(NS, "fleet-api")]
        assert secret["metadata"]["annotations"] == reference["metadata"]["annotations"]
    assert world.fake_auth.count() == 1, "the tenant's annotations never decide that the account logs in"


async def test_self_made_tokens_and_deletions_cause_no_login(world: World) -> None:
    await two_tenants(world)
    now = world.clock.now
    for exp in (now - 60, now + 5, now + 120):  # past, near, and earlier than the pool's token
        tamper(world, token(self_made(exp, now)))
        world.clock.advance(400)
        await world.run(namespace=OTHER_NS)
        assert the_pool_token(world), f"a self-made token expiring at {exp - now:+.0f}s is replaced"
    for _ in range(20):
        if (OTHER_NS, "fleet-api") in world.kube.secrets:  # restores back off: it may still be gone
            world.kube.remove_secret(OTHER_NS, "fleet-api")
        world.clock.advance(1)
        await world.run(namespace=OTHER_NS)
    world.clock.advance(400)
    await world.run(namespace=OTHER_NS)
    assert the_pool_token(world)
    assert world.fake_auth.count() == 1


async def test_a_hundred_edits_in_a_minute_make_no_login_and_restores_back_off(world: World) -> None:
    await two_tenants(world)
    writes_before = len(world.kube.secret_writes)
    start = world.clock.now
    for i in range(100):
        if i % 2:
            tamper(world, edited_annotations(refreshed=start - 7200, expires=start + 1))
        else:
            tamper(world, token(self_made(start + 5, start)))
        world.clock.advance(0.6)
        await world.run(namespace=OTHER_NS)
    restores = len(world.kube.secret_writes) - writes_before
    assert world.fake_auth.count() == 1
    assert restores < 20, f"{restores} restores for 100 edits in a minute: they back off"
    world.clock.advance(400)  # the tenant stopped
    await world.run(namespace=OTHER_NS)
    assert the_pool_token(world)


async def test_after_a_restart_edits_cost_at_most_one_login(world: World) -> None:
    await two_tenants(world)
    world.restart()  # nothing in memory: the pool is empty, tokens are adopted per namespace
    await world.run(namespace=NS)
    await world.run(namespace=OTHER_NS)
    assert world.fake_auth.count() == 1, "a restart adopts the Secrets' tokens"
    now = world.clock.now
    for _ in range(5):  # within the token's hour: nothing is due but what the tenant fakes
        tamper(world, edited_annotations(refreshed=now - 7200, expires=now + 1))
        world.clock.advance(30)
        await world.run(namespace=OTHER_NS)
        tamper(world, token(self_made(now + 5, now)))
        world.clock.advance(30)
        await world.run(namespace=OTHER_NS)
    assert world.fake_auth.count() <= 2, "at most one login after the restart, then the pool's token is used"
    await world.run(namespace=NS)
    assert world.fake_auth.count() <= 2


async def test_a_token_adopted_after_a_restart_never_serves_another_namespace(world: World) -> None:
    await two_tenants(world)
    world.restart()
    now = world.clock.now
    exp = jwt.decode(world.token(), options={"verify_signature": False})["exp"]
    forged = self_made(exp, now)
    tamper(world, token(forged))
    tamper(world, edited_annotations(refreshed=now - 10, expires=exp))
    await world.run(namespace=OTHER_NS)
    world.kube.remove_secret(NS, "fleet-api")
    await world.run(namespace=NS)
    assert world.token(namespace=NS) != forged, "the tenant's token never reaches another namespace"
