"""The fake Auth API must honour the real contract, or every test built on it proves nothing."""

from __future__ import annotations

import contextlib
import gzip
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from localenv.fakeauth import FakeAuthAPI, Fault, FaultKind

USER = "fleet-bot@example.com"
PASSWORD = "correct-horse-battery-staple-7Qz"
REPO_ROOT = Path(__file__).resolve().parents[2]


class FakeClock:
    """A wall clock the test moves by hand, so expiry needs no sleeping."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def fake(signing_key: rsa.RSAPrivateKey) -> Iterator[FakeAuthAPI]:
    with FakeAuthAPI({USER: PASSWORD}, signing_key=signing_key) as api:
        yield api


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as http:
        yield http


def login(
    client: httpx.Client, api: FakeAuthAPI, username: str = USER, password: str = PASSWORD
) -> httpx.Response:
    return client.post(f"{api.base_url}/auth/password", data={"username": username, "password": password})


def refresh(client: httpx.Client, api: FakeAuthAPI, refresh_token: str) -> httpx.Response:
    return client.post(f"{api.base_url}/auth/refresh", data={"refresh_token": refresh_token})


def decode(api: FakeAuthAPI, token: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(
        token, api.public_key_pem, algorithms=["RS256"], audience="auth-api"
    )
    return claims


# ----------------------------------------------------------------------------------------- contract


def test_login_returns_the_documented_token_pair(fake: FakeAuthAPI, client: httpx.Client) -> None:
    response = login(client, fake)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"access_token", "refresh_token", "token_type", "expires_in"}
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == "3600"  # a string, as in the real API
    assert fake.base_url.startswith("http://127.0.0.1:") and fake.base_url.endswith("/api/v1")


def test_access_token_is_an_rs256_jwt_signed_by_the_public_key(
    fake: FakeAuthAPI, client: httpx.Client
) -> None:
    body = login(client, fake).json()

    assert jwt.get_unverified_header(body["access_token"])["alg"] == "RS256"
    claims = decode(fake, body["access_token"])
    assert claims["typ"] == "Bearer"
    assert claims["preferred_username"] == USER
    assert claims["aud"] == "auth-api"
    assert claims["nbf"] == 0
    assert isinstance(claims["exp"], int) and isinstance(claims["iat"], int)
    assert claims["exp"] - claims["iat"] == 3600
    assert decode(fake, body["refresh_token"])["typ"] == "Refresh"


def test_tokens_do_not_verify_with_another_fakes_key(fake: FakeAuthAPI, client: httpx.Client) -> None:
    token = login(client, fake).json()["access_token"]
    with FakeAuthAPI() as other, pytest.raises(jwt.InvalidSignatureError):
        decode(other, token)


def test_subject_is_stable_per_user_across_logins_and_password_changes(
    fake: FakeAuthAPI, client: httpx.Client
) -> None:
    fake.add_user("other@example.com", "other-password-1")
    first = decode(fake, login(client, fake).json()["access_token"])
    fake.set_password(USER, "rotated-password-2")
    second = decode(fake, login(client, fake, password="rotated-password-2").json()["access_token"])
    other = decode(fake, login(client, fake, "other@example.com", "other-password-1").json()["access_token"])

    assert first["sub"] == second["sub"] != other["sub"]
    assert first["jti"] != second["jti"]


@pytest.mark.parametrize(
    ("username", "password"), [(USER, "wrong-password"), ("nobody@example.com", PASSWORD), (USER, "")]
)
def test_bad_credentials_get_401(
    fake: FakeAuthAPI, client: httpx.Client, username: str, password: str
) -> None:
    response = login(client, fake, username, password)

    assert response.status_code == 401
    assert response.json()["error"] == "invalid_grant"


def test_old_password_stops_working_after_set_password(fake: FakeAuthAPI, client: httpx.Client) -> None:
    fake.set_password(USER, "brand-new-password-3")

    assert login(client, fake).status_code == 401
    assert login(client, fake, password="brand-new-password-3").status_code == 200


def test_removed_user_can_neither_log_in_nor_refresh(fake: FakeAuthAPI, client: httpx.Client) -> None:
    refresh_token = login(client, fake).json()["refresh_token"]
    fake.remove_user(USER)

    assert login(client, fake).status_code == 401
    assert refresh(client, fake, refresh_token).status_code == 400


def test_json_body_is_rejected_because_the_api_wants_a_form(fake: FakeAuthAPI, client: httpx.Client) -> None:
    response = client.post(f"{fake.base_url}/auth/password", json={"username": USER, "password": PASSWORD})

    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_unknown_path_is_404_and_wrong_method_is_405(fake: FakeAuthAPI, client: httpx.Client) -> None:
    assert client.post(f"{fake.base_url}/auth/nope", data={}).status_code == 404
    response = client.get(f"{fake.base_url}/auth/password")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert fake.count() == 0  # only real endpoint calls are counted


# ----------------------------------------------------------------------------------------- lifetimes


def test_lifetime_change_at_runtime_shows_in_expires_in_and_exp(
    fake: FakeAuthAPI, client: httpx.Client
) -> None:
    fake.access_lifetime = 3.0
    body = login(client, fake).json()
    claims = decode(fake, body["access_token"])

    assert body["expires_in"] == "3"
    assert claims["exp"] - claims["iat"] == 3  # type: ignore[operator]


def test_expires_in_can_be_a_number_or_absent(fake: FakeAuthAPI, client: httpx.Client) -> None:
    fake.expires_in_style = "number"
    assert login(client, fake).json()["expires_in"] == 3600
    fake.expires_in_style = "omit"
    body = login(client, fake).json()
    assert "expires_in" not in body
    assert "exp" in decode(fake, body["access_token"])


def test_issued_token_records_follow_the_fake_clock(
    client: httpx.Client, signing_key: rsa.RSAPrivateKey
) -> None:
    clock = FakeClock()
    with FakeAuthAPI(
        {USER: PASSWORD}, signing_key=signing_key, access_lifetime=30, refresh_lifetime=90, clock=clock
    ) as api:
        body = login(client, api).json()
        claims = jwt.decode(
            body["access_token"],
            api.public_key_pem,
            algorithms=["RS256"],
            audience="auth-api",
            options={"verify_exp": False},
        )
        issued = {token.kind: token for token in api.issued_tokens}

    assert claims["iat"] == int(clock.now) and claims["exp"] == int(clock.now) + 30
    assert issued["access"].token == body["access_token"]
    assert issued["access"].expires_at == clock.now + 30
    assert issued["refresh"].expires_at == clock.now + 90


# ----------------------------------------------------------------------------------------- refresh


def test_refresh_returns_a_new_pair_for_the_same_user(fake: FakeAuthAPI, client: httpx.Client) -> None:
    first = login(client, fake).json()
    response = refresh(client, fake, first["refresh_token"])

    assert response.status_code == 200
    second = response.json()
    assert second["token_type"] == "bearer" and second["expires_in"] == "3600"
    assert second["access_token"] != first["access_token"]
    assert second["refresh_token"] != first["refresh_token"]
    assert decode(fake, second["access_token"])["sub"] == decode(fake, first["access_token"])["sub"]
    assert decode(fake, second["access_token"])["preferred_username"] == USER


def test_refresh_token_expires_by_the_fake_clock(
    client: httpx.Client, signing_key: rsa.RSAPrivateKey
) -> None:
    clock = FakeClock()
    with FakeAuthAPI({USER: PASSWORD}, signing_key=signing_key, refresh_lifetime=10, clock=clock) as api:
        refresh_token = login(client, api).json()["refresh_token"]
        clock.now += 9.5
        assert refresh(client, api, refresh_token).status_code == 200
        clock.now += 0.5
        expired = refresh(client, api, refresh_token)

    assert expired.status_code == 400
    assert expired.json()["error"] == "invalid_grant"


@pytest.mark.parametrize("kind", ["garbage", "foreign", "access"])
def test_refresh_rejects_tokens_it_did_not_issue_as_refresh_tokens(
    fake: FakeAuthAPI, client: httpx.Client, kind: str
) -> None:
    pair = login(client, fake).json()
    if kind == "garbage":
        token = "not-a-token"
    elif kind == "foreign":
        with FakeAuthAPI({USER: PASSWORD}) as other:
            token = login(client, other).json()["refresh_token"]
    else:
        token = pair["access_token"]

    response = refresh(client, fake, token)

    assert response.status_code == 400
    assert response.json() == {"error": "invalid_grant", "error_description": "Invalid refresh token"}
    assert fake.calls[-1].username is None


def test_revoked_refresh_tokens_are_rejected_with_the_configured_status(
    fake: FakeAuthAPI, client: httpx.Client
) -> None:
    fake.refresh_error_status = 401
    old = login(client, fake).json()["refresh_token"]
    fake.revoke_refresh_tokens(USER)
    new = login(client, fake).json()["refresh_token"]

    assert refresh(client, fake, old).status_code == 401
    assert refresh(client, fake, new).status_code == 200


def test_rotation_makes_a_used_refresh_token_single_use(
    client: httpx.Client, signing_key: rsa.RSAPrivateKey
) -> None:
    with FakeAuthAPI({USER: PASSWORD}, signing_key=signing_key, rotate_refresh_tokens=True) as api:
        token = login(client, api).json()["refresh_token"]
        assert refresh(client, api, token).status_code == 200
        assert refresh(client, api, token).status_code == 400


# ----------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize(
    ("fault", "status", "headers"),
    [
        (Fault.http_error(401), 401, {}),
        (Fault.http_error(500, body="boom"), 500, {"content-type": "text/plain; charset=utf-8"}),
        (Fault.http_error(503, body={"error": "maintenance"}), 503, {"content-type": "application/json"}),
        (Fault.rate_limited(retry_after=2), 429, {"retry-after": "2"}),
    ],
)
def test_status_fault_fires_once_then_the_api_recovers(
    fake: FakeAuthAPI, client: httpx.Client, fault: Fault, status: int, headers: dict[str, str]
) -> None:
    fake.fail_next("password", fault)

    failed = login(client, fake)
    assert failed.status_code == status
    assert failed.content == fault.body
    for name, value in headers.items():
        assert failed.headers[name] == value
    assert login(client, fake).status_code == 200
    assert [call.status for call in fake.calls] == [status, 200]
    assert [call.fault for call in fake.calls] == [FaultKind.HTTP_ERROR, None]


def test_faults_are_per_endpoint_and_queue_with_times(fake: FakeAuthAPI, client: httpx.Client) -> None:
    pair = login(client, fake).json()
    fake.fail_next("refresh", Fault.http_error(503), times=2)

    assert login(client, fake).status_code == 200
    assert [refresh(client, fake, pair["refresh_token"]).status_code for _ in range(3)] == [503, 503, 200]


def test_sticky_fault_applies_until_cleared_and_queued_faults_go_first(
    fake: FakeAuthAPI, client: httpx.Client
) -> None:
    fake.set_fault("password", Fault.http_error(500))
    fake.fail_next("password", Fault.http_error(429))

    assert [login(client, fake).status_code for _ in range(3)] == [429, 500, 500]
    fake.set_fault("password", None)
    assert login(client, fake).status_code == 200
    with pytest.raises(ValueError, match="unknown endpoint"):
        fake.set_fault("token", None)  # type: ignore[arg-type]


def test_not_json_fault_sends_plain_text_with_200(fake: FakeAuthAPI, client: httpx.Client) -> None:
    fake.fail_next("password", Fault.not_json())
    response = login(client, fake)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    with pytest.raises(ValueError):
        response.json()


def test_html_page_fault_sends_html_with_200(fake: FakeAuthAPI, client: httpx.Client) -> None:
    fake.fail_next("password", Fault.html_page())
    response = login(client, fake)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text.startswith("<!DOCTYPE html>")


def test_missing_fields_fault_drops_the_named_fields(fake: FakeAuthAPI, client: httpx.Client) -> None:
    fake.fail_next("password", Fault.missing_fields())
    fake.fail_next("password", Fault.missing_fields("refresh_token", "expires_in"))

    assert set(login(client, fake).json()) == {"refresh_token", "token_type", "expires_in"}
    assert set(login(client, fake).json()) == {"access_token", "token_type"}


def test_token_shaped_faults_do_not_turn_bad_credentials_into_success(
    fake: FakeAuthAPI, client: httpx.Client
) -> None:
    fake.fail_next("password", Fault.missing_fields())

    assert login(client, fake, password="wrong-password").status_code == 401
    assert login(client, fake).status_code == 200


def test_access_token_not_jwt_fault(fake: FakeAuthAPI, client: httpx.Client) -> None:
    fake.fail_next("password", Fault.access_token_not_jwt())
    body = login(client, fake).json()

    with pytest.raises(jwt.DecodeError):
        jwt.get_unverified_header(body["access_token"])
    assert body["expires_in"] == "3600"
    assert refresh(client, fake, body["refresh_token"]).status_code == 200


def test_no_expiry_fault_leaves_no_way_to_know_the_lifetime(fake: FakeAuthAPI, client: httpx.Client) -> None:
    fake.fail_next("refresh", Fault.no_expiry())
    pair = login(client, fake).json()
    body = refresh(client, fake, pair["refresh_token"]).json()

    assert "expires_in" not in body
    assert "exp" not in decode(fake, body["access_token"])


def test_huge_body_fault_sends_five_mebibytes(fake: FakeAuthAPI, client: httpx.Client) -> None:
    fake.fail_next("password", Fault.huge_body())
    response = login(client, fake)

    assert response.status_code == 200
    assert len(response.content) == 5 * 1024 * 1024
    assert login(client, fake).status_code == 200


def test_drop_connection_fault_closes_without_a_response(fake: FakeAuthAPI, client: httpx.Client) -> None:
    fake.fail_next("password", Fault.drop_connection())

    with pytest.raises(httpx.RemoteProtocolError):
        login(client, fake)
    assert fake.calls[0].status is None
    assert login(client, fake).status_code == 200


def test_slow_fault_trips_client_timeout_and_stop_does_not_wait_for_it(
    client: httpx.Client, signing_key: rsa.RSAPrivateKey
) -> None:
    api = FakeAuthAPI({USER: PASSWORD}, signing_key=signing_key).start()
    try:
        api.fail_next("password", Fault.slow(30))
        with pytest.raises(httpx.ReadTimeout):
            client.post(
                f"{api.base_url}/auth/password", data={"username": USER, "password": PASSWORD}, timeout=0.2
            )
        assert api.count(status=200) == 1  # decided before the delay
        api.fail_next("password", Fault.slow(30))
        pending = threading.Thread(target=lambda: _swallow(login, client, api))
        pending.start()
        api.wait_for_calls(2, timeout=2)
    finally:
        started = time.monotonic()
        api.stop()
    assert time.monotonic() - started < 2
    pending.join(timeout=2)
    assert not pending.is_alive()


def test_any_fault_can_be_delayed(fake: FakeAuthAPI, client: httpx.Client) -> None:
    fake.fail_next("password", Fault.http_error(503).after(0.3))
    started = time.monotonic()

    assert login(client, fake).status_code == 503
    assert time.monotonic() - started >= 0.3


def _swallow(call: object, *args: object) -> None:
    with contextlib.suppress(httpx.HTTPError):
        call(*args)  # type: ignore[operator]


# ----------------------------------------------------------------------------------------- counting


def test_calls_are_counted_per_endpoint_user_and_status(fake: FakeAuthAPI, client: httpx.Client) -> None:
    pair = login(client, fake).json()
    login(client, fake, password="wrong-password")
    refresh(client, fake, pair["refresh_token"])

    assert fake.count() == 3
    assert fake.count("password") == 2
    assert fake.count("refresh", username=USER) == 1
    assert fake.count("password", status=401) == 1
    assert [(c.endpoint, c.username, c.status) for c in fake.calls] == [
        ("password", USER, 200),
        ("password", USER, 401),
        ("refresh", USER, 200),
    ]
    fake.reset_counts()
    assert fake.count() == 0 and fake.calls == []


def test_wait_for_calls_wakes_when_calls_arrive_from_another_thread(
    fake: FakeAuthAPI, client: httpx.Client
) -> None:
    worker = threading.Thread(target=lambda: [login(client, fake) for _ in range(3)])
    worker.start()
    calls = fake.wait_for_calls(3, endpoint="password", timeout=5)
    worker.join()

    assert len(calls) == 3 and all(call.status == 200 for call in calls)


def test_wait_for_calls_raises_timeout_error_at_the_deadline(fake: FakeAuthAPI) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="expected 1 calls"):
        fake.wait_for_calls(1, endpoint="refresh", timeout=0.1)
    assert time.monotonic() - started < 1


async def test_async_clients_are_served(fake: FakeAuthAPI) -> None:
    async with httpx.AsyncClient() as http:
        response = await http.post(
            f"{fake.base_url}/auth/password", data={"username": USER, "password": PASSWORD}
        )
    calls = fake.wait_for_calls(1, username=USER, timeout=2)

    assert response.status_code == 200
    assert calls[0].endpoint == "password"


def test_secret_strings_cover_passwords_sent_and_tokens_issued(
    fake: FakeAuthAPI, client: httpx.Client
) -> None:
    pair = login(client, fake).json()
    login(client, fake, password="typo-password-9")
    fresh = refresh(client, fake, pair["refresh_token"]).json()

    secrets = fake.secret_strings()
    assert {PASSWORD, "typo-password-9"} <= secrets
    assert {
        pair["access_token"],
        pair["refresh_token"],
        fresh["access_token"],
        fresh["refresh_token"],
    } <= secrets
    assert fake.passwords_seen == [PASSWORD, "typo-password-9"]


# ----------------------------------------------------------------------------------------- lifecycle


def test_stop_is_prompt_with_an_idle_keep_alive_connection_and_restart_keeps_port_and_key(
    client: httpx.Client,
) -> None:
    api = FakeAuthAPI({USER: PASSWORD}).start()
    token = login(client, api).json()["refresh_token"]  # leaves a pooled keep-alive connection
    port, key = api.port, api.public_key_pem

    started = time.monotonic()
    api.stop()
    assert time.monotonic() - started < 1
    assert not api.running

    api.start()
    try:
        assert (api.port, api.public_key_pem) == (port, key)
        assert refresh(client, api, token).status_code == 200
    finally:
        api.close()


def test_tls_mode_serves_https_trusted_only_through_ca_file(
    client: httpx.Client, signing_key: rsa.RSAPrivateKey
) -> None:
    with FakeAuthAPI({USER: PASSWORD}, signing_key=signing_key, tls=True) as api:
        assert api.base_url.startswith("https://127.0.0.1:")
        assert api.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")
        with httpx.Client(verify=api.client_ssl_context()) as trusting:
            assert login(trusting, api).status_code == 200
            localhost = api.base_url.replace("127.0.0.1", "localhost")
            response = trusting.post(
                f"{localhost}/auth/password", data={"username": USER, "password": PASSWORD}
            )
            assert response.status_code == 200
        with pytest.raises(httpx.ConnectError):
            login(client, api)  # default trust store does not know the fake CA
        ca_file = api.ca_file
    assert not ca_file.exists()


def test_cli_serves_users_until_terminated(client: httpx.Client) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    command = [sys.executable, "-m", "localenv.fakeauth", "--port", "0"]
    command += ["--user", f"{USER}:{PASSWORD}", "--lifetime", "60"]
    with subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, text=True) as process:
        try:
            assert process.stdout is not None
            base_url = process.stdout.readline().strip()
            assert base_url.startswith("http://127.0.0.1:")
            response = client.post(f"{base_url}/auth/password", data={"username": USER, "password": PASSWORD})
            assert response.status_code == 200
            assert response.json()["expires_in"] == "60"
        finally:
            process.terminate()
            returncode = process.wait(timeout=5)
    assert returncode == 0


# ------------------------------------------------------------------------------ hostile answers


def test_raw_fault_answers_exactly_the_bytes_given(fake: FakeAuthAPI, client: httpx.Client) -> None:
    fake.fail_next("password", Fault.raw(b"\x00odd", {"X-Odd": "1"}, status=299))

    response = login(client, fake)

    assert (response.status_code, response.content, response.headers["x-odd"]) == (299, b"\x00odd", "1")


def test_gzipped_fault_is_the_normal_answer_gzip_encoded(fake: FakeAuthAPI, client: httpx.Client) -> None:
    fake.fail_next("password", Fault.gzipped())

    response = login(client, fake)

    assert response.headers["content-encoding"] == "gzip"
    assert decode(fake, response.json()["access_token"])["preferred_username"] == USER


@pytest.mark.parametrize("layers", [1, 2])
def test_gzip_bomb_expands_to_exactly_its_size_through_every_layer(layers: int) -> None:
    fault = Fault.gzip_bomb(8 * 1024 * 1024, layers=layers)
    headers = dict(fault.headers)

    body = fault.body
    for _ in range(layers):
        body = gzip.decompress(body)

    assert headers["Content-Encoding"] == ", ".join(["gzip"] * layers)
    assert len(body) == 8 * 1024 * 1024 and body.startswith(b'{"padding": "') and body.endswith(b'"}')
    assert len(fault.body) < 64 * 1024


def test_with_claims_overrides_and_deletes_access_token_claims(
    fake: FakeAuthAPI, client: httpx.Client
) -> None:
    fake.fail_next("password", Fault.with_claims(exp=10**18, email=None))

    token = login(client, fake).json()["access_token"]
    claims = jwt.decode(
        token, fake.public_key_pem, algorithms=["RS256"], audience="auth-api", options={"verify_exp": False}
    )

    assert claims["exp"] == 10**18 and "email" not in claims


def test_echo_sets_a_cookie_and_echoes_the_form_in_headers(fake: FakeAuthAPI, client: httpx.Client) -> None:
    fake.fail_next("password", Fault.echo())

    response = login(client, fake)

    assert response.status_code == 200
    assert response.headers["x-echo-password"] == PASSWORD
    cookie = response.cookies["session"]
    assert cookie in fake.secret_strings()


def test_drip_sends_the_answer_one_byte_at_a_time(fake: FakeAuthAPI) -> None:
    fake.fail_next("password", Fault.drip(0.05))
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", fake.port), timeout=5) as sock:
        form = f"username={USER}&password={PASSWORD}".encode()
        head = (
            "POST /api/v1/auth/password HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {len(form)}\r\n\r\n"
        )
        sock.sendall(head.encode() + form)
        reads = [sock.recv(1024) for _ in range(5)]

    assert [len(chunk) for chunk in reads] == [1] * 5
    assert b"".join(reads) == b"HTTP/"
    assert time.monotonic() - started >= 0.2
