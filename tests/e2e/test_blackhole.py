"""A leader cut off by a black hole (no FIN, no RST) stops writing before the standby takes over.

The leader reaches the API server through a proxy the test controls (localenv/tcpproxy.py);
the standby connects directly. Leadership is read from each replica's `simacan_leader`
metric every 50 ms, Secret writes from a watch on the API server.
"""

from __future__ import annotations

from pathlib import Path

from localenv.controlplane import ControlPlane
from localenv.scenarios.faultscenarios import blackhole_leader
from simacan_token_operator.kube.leader import LeaseTimings
from tests.support.cluster import ClusterHandle

LEASE = LeaseTimings()  # what the operator runs with


def test_black_holed_leader_never_overlaps_the_new_leader(
    installed: ControlPlane, cluster: ClusterHandle, tmp_path: Path
) -> None:
    outcome = blackhole_leader(installed, cluster.operator_kubeconfig, tmp_path)
    figures = outcome.figures
    print(
        f"black hole: overlap {figures.extra['overlap']:.2f}s, leader fenced "
        f"{figures.extra['fenced_after']:.1f}s after the black hole, "
        f"no leader for {figures.extra['gap']:.1f}s, "
        f"new leader after {figures.recover:.1f}s; {figures.secret_writes} Secret writes, "
        f"{figures.auth_calls} Auth API calls, {figures.events} Events (N=1)"
    )
    assert outcome.violations == []
    assert figures.extra["overlap"] == 0.0
    # The old leader stops at its renew deadline, the standby waits out the lease duration.
    assert figures.extra["fenced_after"] <= LEASE.renew_deadline + 1.0
    assert figures.recover <= LEASE.duration + 2 * LEASE.retry_period + 5.0
    assert figures.longest_invalid == 0.0
