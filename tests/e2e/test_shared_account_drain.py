"""No tenant drains a shared account, on a real API server: the fast tier's test again."""

from __future__ import annotations

from tests.integration.test_cluster_credential import cluster_operator as cluster_operator
from tests.integration.test_cluster_credential import fleet as fleet
from tests.integration.test_shared_account_drain import fake_auth as fake_auth
from tests.integration.test_shared_account_drain import test_a_tenant_cannot_make_the_shared_account_log_in

__all__ = ["test_a_tenant_cannot_make_the_shared_account_log_in"]
