"""The request budget's flags: defaults, explicit values, 0 to turn the limit off, clear errors."""

from __future__ import annotations

import pytest

from simacan_token_operator.app.cli import parse_args
from simacan_token_operator.kube.budget import DEFAULT_BURST, DEFAULT_QPS


def test_the_budget_defaults_apply_when_no_flag_is_given() -> None:
    options = parse_args(["run", "--namespace", "team-a"])
    assert (options.kube_api_qps, options.kube_api_burst) == (DEFAULT_QPS, DEFAULT_BURST) == (500.0, 5000)


def test_the_budget_flags_are_read_beside_the_existing_ones() -> None:
    options = parse_args(
        ["run", "-n", "team-a", "--kube-api-qps", "12.5", "--kube-api-burst", "30", "--metrics-port", "9090"]
    )
    assert (options.kube_api_qps, options.kube_api_burst) == (12.5, 30)
    assert options.namespace == ["team-a"] and options.metrics_port == 9090


def test_qps_zero_turns_the_client_side_limit_off() -> None:
    assert parse_args(["run", "--kube-api-qps", "0"]).kube_api_qps == 0


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--kube-api-qps", "-1"], "give a number of requests per second, 0 or more"),
        (["--kube-api-qps", "nan"], "give a number of requests per second, 0 or more"),
        (["--kube-api-qps", "inf"], "give a number of requests per second, 0 or more"),
        (["--kube-api-qps", "fast"], "'fast' is not a number"),
        (["--kube-api-burst", "0"], "give at least 1"),
        (["--kube-api-burst", "2.5"], "'2.5' is not a whole number"),
    ],
)
def test_a_bad_budget_flag_is_refused_with_what_to_give(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["run", *flags])
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
