"""`Body`: a Kubernetes object or API answer as decoded JSON, the shape every layer passes around."""

from __future__ import annotations

from typing import Any

Body = dict[str, Any]
