"""simacan_kube_requests_total on the real API server: after the operator served a credential its
/metrics count the Secret create and the status patch it sent (the fast tier's test, run again)."""

from tests.integration.test_kube_requests import test_the_operator_counts_its_own_kubernetes_requests

__all__ = ["test_the_operator_counts_its_own_kubernetes_requests"]
