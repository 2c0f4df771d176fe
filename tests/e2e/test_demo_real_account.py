"""`scripts/demo --auth-url` with an account from $SIMACAN_USERNAME/$SIMACAN_PASSWORD: no process it
starts (etcd, kube-apiserver, kube-controller-manager, the operator) receives the login in its
environment, and the demo says where the password is kept while it runs.

The Auth API here is the local fake Auth API over HTTPS, given as if it were the real one; the operator
does not trust its CA (a real Auth API needs no --auth-ca-file), so no token is issued: this test is
about where the password goes, not about logging in.
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
import threading
from pathlib import Path

from localenv.fakeauth import FakeAuthAPI
from localenv.polling import eventually

REPO = Path(__file__).resolve().parents[2]
USERNAME = "someone@example.com"


def environ(pid: int) -> bytes:
    return Path(f"/proc/{pid}/environ").read_bytes()


def test_no_child_of_the_demo_gets_the_login_and_the_demo_says_where_the_password_is() -> None:
    password = f"pw-{secrets.token_hex(12)}"
    with FakeAuthAPI({USERNAME: password}, tls=True) as fake_auth:
        env = {**os.environ, "SIMACAN_USERNAME": USERNAME, "SIMACAN_PASSWORD": password}
        process = subprocess.Popen(
            [sys.executable, "-m", "localenv.demo", "--auth-url", fake_auth.base_url, "--for", "5"],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
        )
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(process.stdout or []), daemon=True)
        reader.start()
        try:
            started = eventually(
                lambda: re.search(r"operator started \(pid (\d+)\)", "".join(lines)),
                timeout=120,
                what="the demo starting the operator",
            )
            output = "".join(lines)
            plane = re.search(r"\(pids: ([^)]*)\)", output)
            assert plane, output
            named = (entry.strip().rsplit(" ", 1) for entry in plane.group(1).split(","))
            pids = {name: int(pid) for name, pid in named}
            pids["operator"] = int(started.group(1))
            seen = {name: environ(pid) for name, pid in pids.items()}  # while they run
            assert process.wait(timeout=120) is not None
        finally:
            if process.poll() is None:
                process.kill()
        reader.join(timeout=10)
    output = "".join(lines)

    assert set(pids) >= {"etcd", "kube-apiserver", "kube-controller-manager", "operator"}, output
    for name, block in seen.items():
        assert b"PATH=" in block, f"{name}: not an environment"
        assert password.encode() not in block, f"{name} received the password in its environment"
        assert b"SIMACAN_PASSWORD=" not in block and b"SIMACAN_USERNAME=" not in block, name
    work = re.search(r"log: (/\S+)/operator\.log", output)
    assert work, output
    notice = " ".join(output.split())
    assert "your password goes into the Secret simacan-demo/simacan-login" in notice
    assert f"{work.group(1)}/cluster/etcd" in notice and "without client authentication" in notice
    assert f"removes {work.group(1)}" in notice
    assert not Path(work.group(1)).exists(), "the etcd data went with the temporary directory"
    assert password not in output
