"""Logging setup: the operator's own loggers follow --log-level; HTTP libraries never go below WARNING.

At DEBUG, httpx and httpcore log every response header verbatim (a `Set-Cookie`, or a header that
echoes the form with the password), urllib3 and the kubernetes client log request lines and bodies,
hpack logs decoded header blocks. None of that is needed to run the operator, and all of it can
carry a secret, so these loggers stay at WARNING whatever level the user asks for.
"""

from __future__ import annotations

import logging
import sys

HTTP_LOGGERS = (
    "httpx",
    "httpcore",
    "h11",
    "h2",
    "hpack",
    "urllib3",
    "kubernetes.client.rest",
    "aiohttp.access",
    "aiohttp.client",
    "aiohttp.internal",
    "aiohttp.server",
    "aiohttp.web",
    "asyncio",
)
"""Loggers that can print HTTP traffic: URLs, headers or bodies. `asyncio` logs slow callbacks
with their arguments at DEBUG."""

FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def configure(level: str) -> None:
    """Log to stderr at `level`; kopf's per-watch chatter only at debug; HTTP libraries at WARNING."""
    logging.basicConfig(level=getattr(logging, level.upper()), format=FORMAT, stream=sys.stderr, force=True)
    logging.getLogger("kopf").setLevel(logging.NOTSET if level == "debug" else logging.WARNING)
    for name in HTTP_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)
