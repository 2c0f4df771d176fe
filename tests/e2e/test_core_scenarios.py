"""The fast tier's core scenarios, run again against the real API server.

Importing the test functions here collects them a second time, with this directory's
`cluster` fixture: a real kube-apiserver, with the operator running under the manifests' RBAC.
The rollout-restart scenario needs the opt-in component: it runs in test_rollout_restarts.py.
"""

from tests.integration.test_consumers import (
    test_env_var_consumer_is_warned_about,
    test_extra_keys_hold_the_token_in_the_shape_a_client_wants,
)
from tests.integration.test_convergence import test_three_active_operators_converge
from tests.integration.test_failures import (
    test_outage_backs_off_keeps_the_valid_token_and_recovers,
    test_wrong_password_is_reported_and_not_retried_until_the_secret_changes,
)
from tests.integration.test_issuing import (
    test_creates_token_secret_that_a_workload_can_read,
    test_equal_credentials_share_one_login,
    test_refreshes_before_expiry_again_and_again,
    test_restart_makes_no_login_while_token_valid,
)
from tests.integration.test_kubernetes_behaviour import (
    test_deleted_or_edited_token_secret_is_restored_without_a_login,
    test_foreign_secret_with_the_target_name_is_never_modified,
    test_missing_credentials_secret_is_named_and_picked_up_when_created,
    test_password_rotation_logs_in_again_within_seconds,
    test_refresh_requested_annotation_forces_a_new_token,
    test_spec_changes_take_effect_immediately,
)
from tests.integration.test_secrecy import (
    test_no_secret_material_in_logs_events_or_status_through_a_full_cycle,
)

__all__ = [
    "test_creates_token_secret_that_a_workload_can_read",
    "test_deleted_or_edited_token_secret_is_restored_without_a_login",
    "test_env_var_consumer_is_warned_about",
    "test_equal_credentials_share_one_login",
    "test_extra_keys_hold_the_token_in_the_shape_a_client_wants",
    "test_foreign_secret_with_the_target_name_is_never_modified",
    "test_missing_credentials_secret_is_named_and_picked_up_when_created",
    "test_no_secret_material_in_logs_events_or_status_through_a_full_cycle",
    "test_outage_backs_off_keeps_the_valid_token_and_recovers",
    "test_password_rotation_logs_in_again_within_seconds",
    "test_refresh_requested_annotation_forces_a_new_token",
    "test_refreshes_before_expiry_again_and_again",
    "test_restart_makes_no_login_while_token_valid",
    "test_spec_changes_take_effect_immediately",
    "test_three_active_operators_converge",
    "test_wrong_password_is_reported_and_not_retried_until_the_secret_changes",
]
