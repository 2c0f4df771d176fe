"""During a rollout the old and the new version overlap; they never both write: the old one
finishes its writes and releases the Lease on SIGTERM before the new one leads."""

from __future__ import annotations

from pathlib import Path

from localenv.controlplane import ControlPlane
from localenv.scenarios.faultscenarios import rolling_upgrade
from tests.support.cluster import ClusterHandle


def test_old_and_new_version_never_lead_together(
    installed: ControlPlane, cluster: ClusterHandle, tmp_path: Path
) -> None:
    outcome = rolling_upgrade(installed, cluster.operator_kubeconfig, tmp_path)
    figures = outcome.figures
    print(
        f"rollout: new version leads {figures.recover:.1f}s after SIGTERM, "
        f"overlap {figures.extra['overlap']:.2f}s; {figures.secret_writes} Secret writes, "
        f"longest without a valid token {figures.longest_invalid:.1f}s (N=1)"
    )
    assert outcome.violations == []
    assert figures.extra["overlap"] == 0.0
    assert figures.recover <= 10.0  # released, not waited out (the lease lasts 15 s)
    assert figures.longest_invalid == 0.0
