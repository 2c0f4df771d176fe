"""Passes as the operator would run them over time, in process: each credential's pass runs when
its worker would wake (the time its last pass returned) or when a watch event nudges it.

The clock jumps from one wake-up to the next, so minutes of outage or of refresh requests take
milliseconds; a pass that asks to wake at once, again and again, fails the test (a busy loop).
"""

from __future__ import annotations

import base64
import functools
from dataclasses import dataclass, field

import jwt

from tests.unit.test_reconcile_pass import World

Key = tuple[str, str]
"""(namespace, name) of a SimacanCredential."""

MAX_PASSES = 10_000


@dataclass
class Timeline:
    world: World
    keys: list[Key]
    wake: dict[Key, float | None] = field(default_factory=dict)
    passes: int = 0
    expired_seen: list[tuple[Key, float]] = field(default_factory=list)
    """(credential, moment) whenever a Secret held an expired token while the clock moved on."""

    async def nudge(self, key: Key) -> None:
        """A watch event for the credential: its worker runs a pass now."""
        self.passes += 1
        assert self.passes < MAX_PASSES, "the passes never settle: a busy loop"
        self.wake[key] = await self.world.run(name=key[1], namespace=key[0])

    async def until(self, end: float) -> None:
        """Run every pass that comes due up to `end`, then leave the clock at `end`."""
        clock = self.world.clock
        while True:
            due = [at for key in self.keys if (at := self.wake.get(key)) is not None]
            moment = min(due, default=end)
            if moment > end:
                moment = end
            self._check_tokens_until(max(moment, clock.now))
            clock.now = max(clock.now, moment)
            ran = False
            for key in self.keys:
                at = self.wake.get(key)
                if at is not None and at <= clock.now:
                    await self.nudge(key)
                    ran = True
            if not ran and clock.now >= end:
                return

    def expiry(self, key: Key) -> float:
        """The `exp` of the token in the credential's Secret."""
        secret = self.world.kube.secrets[key]
        return _exp(base64.b64decode(secret["data"]["token"]).decode())

    def _check_tokens_until(self, moment: float) -> None:
        """Note each Secret whose token expires before the clock reaches `moment`."""
        for key in self.keys:
            if key in self.world.kube.secrets and (expiry := self.expiry(key)) <= moment:
                self.expired_seen.append((key, expiry))


@functools.lru_cache(maxsize=1024)
def _exp(token: str) -> float:
    """A token's `exp`. The Secrets are looked at before every step of the clock and mostly hold the
    same token as the step before; PyJWT decodes a token in about half a millisecond."""
    return float(jwt.decode(token, options={"verify_signature": False, "verify_exp": False})["exp"])
