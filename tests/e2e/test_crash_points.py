"""SIGKILL at each step of a refresh, triggered from outside (an admission webhook kills the
operator when the API server asks about the write): after a restart the Secret holds a valid
token, the status agrees with it, and at most one extra login happened."""

from __future__ import annotations

from pathlib import Path

import pytest

from localenv.controlplane import ControlPlane
from localenv.scenarios.crashhook import Point
from localenv.scenarios.faultscenarios import crash_during_refresh
from tests.support.cluster import ClusterHandle


@pytest.mark.parametrize("point", ["secret-write", "status-patch"])
def test_a_crash_mid_refresh_loses_nothing(
    installed: ControlPlane, cluster: ClusterHandle, tmp_path: Path, point: Point
) -> None:
    outcome = crash_during_refresh(installed, cluster.operator_kubeconfig, tmp_path, point)
    figures = outcome.figures
    print(
        f"{figures.fault}: recovered {figures.recover:.1f}s after the kill; "
        f"{figures.extra['extra_logins']:.0f} extra logins, {figures.secret_writes} Secret writes, "
        f"longest without a valid token {figures.longest_invalid:.1f}s (N=1)"
    )
    assert outcome.violations == [], outcome.notes
    assert figures.longest_invalid == 0.0
