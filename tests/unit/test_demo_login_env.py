"""The demo's real-account login never reaches a child process through the environment.

Read from /proc/PID/environ of real child processes: what the kernel handed them at exec, which no
later change inside the child can hide.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from localenv import demo

REPO = Path(__file__).resolve().parents[2]
LOGIN_NAMES = (demo.USERNAME_ENV, demo.PASSWORD_ENV)


def environ_of(dump: Path) -> dict[str, str]:
    entries = [e.decode("utf-8", "replace") for e in dump.read_bytes().split(b"\0") if e]
    return dict(entry.partition("=")[::2] for entry in entries)


def test_taking_the_login_leaves_nothing_for_a_child(monkeypatch: pytest.MonkeyPatch) -> None:
    password = f"pw-{secrets.token_hex(8)}"
    monkeypatch.setenv(demo.USERNAME_ENV, "someone@example.com")
    monkeypatch.setenv(demo.PASSWORD_ENV, password)

    taken = demo.take_login_env()

    assert taken == {demo.USERNAME_ENV: "someone@example.com", demo.PASSWORD_ENV: password}
    child = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        environ = Path(f"/proc/{child.pid}/environ").read_bytes()
    finally:
        child.communicate(b"")
    assert password.encode() not in environ
    assert not [n for n in LOGIN_NAMES if f"{n}=".encode() in environ]


def test_an_empty_variable_is_not_a_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(demo.PASSWORD_ENV, "")
    monkeypatch.delenv(demo.USERNAME_ENV, raising=False)
    assert demo.take_login_env() == {}
    assert demo.PASSWORD_ENV not in os.environ


def test_scripts_setup_gets_no_login_and_only_the_reexecuted_demo_does(tmp_path: Path) -> None:
    """The first phase, as `scripts/demo --auth-url` runs it on the system Python (`-m localenv.demo`):
    a copy of localenv/demo.py and the stdlib-only modules it imports, in a tree whose scripts/setup
    and .venv/bin/python record the environment they were started with."""
    (tmp_path / "localenv").mkdir()
    for module in ("__init__.py", "demo.py", "processes.py"):  # what the first phase imports
        shutil.copy(REPO / "localenv" / module, tmp_path / "localenv" / module)
    for path, dump in [("scripts/setup", "setup.environ"), (".venv/bin/python", "demo.environ")]:
        script = tmp_path / path
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(f'#!/bin/sh\ncp /proc/$$/environ "{tmp_path / dump}"\nexit 0\n')
        script.chmod(0o755)
    password = f"pw-{secrets.token_hex(8)}"
    env = {**os.environ, demo.USERNAME_ENV: "someone@example.com", demo.PASSWORD_ENV: password}

    result = subprocess.run(
        [sys.executable, "-m", "localenv.demo", "--auth-url", "https://auth.example/api/v1"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode == 0, result.stderr
    setup = environ_of(tmp_path / "setup.environ")
    assert "PATH" in setup, "the dump is an environment"
    assert not [n for n in LOGIN_NAMES if n in setup]
    assert password not in "\0".join(setup.values())
    reexecuted = environ_of(tmp_path / "demo.environ")
    assert reexecuted[demo.PASSWORD_ENV] == password, "the demo itself, re-executed, still has it"
    assert reexecuted[demo.USERNAME_ENV] == "someone@example.com"
