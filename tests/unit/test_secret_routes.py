"""Routing Secret events to the credentials they concern, with one entry per Secret."""

from __future__ import annotations

from simacan_token_operator.controller.routing import SecretRoutes
from simacan_token_operator.model.spec import watched_secrets

KIND = "SimacanCredential"


def test_a_secret_routes_to_every_credential_that_uses_it_and_to_none_once_they_let_go() -> None:
    routes = SecretRoutes()
    fleet, orders = (KIND, "team", "fleet"), (KIND, "team", "orders")
    routes.index(fleet, ("login", "fleet-token"))
    routes.index(orders, ("login", "orders-token"))
    assert set(routes.users("team", "login")) == {fleet, orders}
    assert list(routes.users("team", "fleet-token")) == [fleet]
    assert list(routes.users("other", "login")) == [], "Secrets are routed within their namespace"

    routes.index(fleet, ("login", "fleet-token"))  # the same spec again changes nothing
    assert set(routes.users("team", "login")) == {fleet, orders}

    routes.index(orders, ("other-login", "orders-token"))  # orders moved to another login Secret
    assert list(routes.users("team", "login")) == [fleet]
    assert list(routes.users("team", "other-login")) == [orders]

    routes.index(fleet, ())
    routes.index(orders, ())
    assert all(
        list(routes.users("team", s)) == [] for s in ("login", "other-login", "fleet-token", "orders-token")
    )
    assert routes._by_secret == {} and routes._watched == {}, "nothing is left behind"


def test_a_credential_watches_its_two_secrets_once_each_and_none_for_a_bad_spec() -> None:
    spec = {"credentialsSecretRef": {"name": "login"}, "authURL": "https://auth.example/api/v1"}
    assert watched_secrets("fleet", "team", spec) == ("login", "fleet")
    same = {**spec, "secretName": "login"}
    assert watched_secrets("fleet", "team", same) == ("login",)
    assert watched_secrets("fleet", "team", {"credentialsSecretRef": "login"}) == ()
