"""A linter the static tier drives is required in CI and skipped, by name, on a contributor's machine."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.static.tools import require_tool

ABSENT = "no-such-linter-3f9c"


@pytest.fixture
def empty_path(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A PATH with nothing on it and no override: the tool is nowhere."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("NO_SUCH_LINTER_BIN", raising=False)


def test_a_missing_tool_fails_the_test_in_ci(empty_path: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"{ABSENT} not found.*install it: apt-get install it"):
        require_tool(ABSENT, "NO_SUCH_LINTER_BIN", "apt-get install it")


@pytest.mark.parametrize("ci", [None, "", "false"])
def test_a_missing_tool_skips_the_test_elsewhere_naming_it(
    empty_path: None, monkeypatch: pytest.MonkeyPatch, ci: str | None
) -> None:
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=f"{ABSENT} not found.*install it: apt-get install it"):
        require_tool(ABSENT, "NO_SUCH_LINTER_BIN", "apt-get install it")


def test_a_found_tool_is_returned_in_ci_and_out(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tool = tmp_path / ABSENT
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    for ci in ("true", "false"):
        monkeypatch.setenv("CI", ci)
        assert require_tool(ABSENT, "NO_SUCH_LINTER_BIN", "apt-get install it") == str(tool)


def test_an_override_that_is_not_executable_fails_in_ci_and_out(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A wrong $X_BIN is a mistake to fix, not a tool to do without."""
    monkeypatch.setenv("NO_SUCH_LINTER_BIN", str(tmp_path / "missing"))
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.fail.Exception, match="NO_SUCH_LINTER_BIN"):
        require_tool(ABSENT, "NO_SUCH_LINTER_BIN", "apt-get install it")
