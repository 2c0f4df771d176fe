"""Fast tier: the operator against kmock's Kubernetes emulator, served over real HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.cluster import ClusterHandle
from tests.support.emulator import running_emulator


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterHandle]:
    with running_emulator(Path(tmp_path_factory.mktemp("emulator"))) as handle:
        yield handle
