"""What a supervised server inherits: never the credentials meant for uv, and under another
account (PostgreSQL's, as root) nothing but the locale and PATH."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from testfleet.processes import RunAs, Supervisor, unprivileged_user
from testfleet.rundir import MARK_VARIABLE, RunDir


def spawned_environ(tmp_path: Path, run_as: RunAs | None) -> dict[str, str]:
    run = RunDir.create(tmp_path / "base")
    try:
        supervisor = Supervisor(run)
        log = run.path / "env.log"
        process = supervisor.spawn("env", ["env", "-0"], log_path=log, run_as=run_as)
        process.popen.wait()
        text = log.read_text()
        supervisor.stop_all()
    finally:
        run.remove()
    return dict(line.split("=", 1) for line in text.split("\0") if "=" in line)


def test_server_gets_no_index_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("UV_INDEX_PRIVATE_PASSWORD", "hunter2")
    monkeypatch.setenv("UV_INDEX_URL", "https://me:hunter2@pypi.example/simple")
    seen = spawned_environ(tmp_path, None)
    assert "UV_INDEX_PRIVATE_PASSWORD" not in seen
    assert "hunter2" not in "".join(seen.values())
    assert MARK_VARIABLE in seen


@pytest.mark.skipif(os.geteuid() != 0, reason="another account needs root")
def test_server_under_another_account_gets_only_locale_and_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """Its /proc/PID/environ is readable by every process of that account."""
    monkeypatch.setenv("CI_DEPLOY_TOKEN", "hunter2")
    run_as = unprivileged_user()
    assert run_as is not None
    os.chmod(tmp_path, 0o755)
    seen = spawned_environ(tmp_path, run_as)
    assert "CI_DEPLOY_TOKEN" not in seen
    assert set(seen) <= {"PATH", "LANG", "LANGUAGE", "TZ", "TMPDIR", MARK_VARIABLE} | {
        k for k in seen if k.startswith("LC_")
    }


SAVES_ON_TERM = """\
import pathlib, signal, sys, time

def save(signum, frame):
    time.sleep(0.3)  # a server writing its data on the way out
    pathlib.Path(sys.argv[1]).write_text("saved")
    sys.exit(0)

signal.signal(signal.SIGTERM, save)
pathlib.Path(sys.argv[1] + ".up").write_text("up")
while True:
    time.sleep(0.05)
"""


def test_a_group_gets_the_grace_when_its_leader_exits_at_once(tmp_path: Path):
    """`sh -c 'server & wait'`: dash dies on SIGTERM at once, the server under it takes a while
    to save. The whole group is asked, so the server gets the grace, not a SIGKILL the moment
    its shell is gone."""
    script = tmp_path / "server.py"
    script.write_text(SAVES_ON_TERM)
    saved = tmp_path / "saved"
    run = RunDir.create(tmp_path / "base")
    try:
        supervisor = Supervisor(run)
        process = supervisor.spawn(
            "server",
            ["sh", "-c", f"{sys.executable} {script} {saved} & wait"],
            log_path=run.path / "server.log",
            signal_group=True,
        )
        deadline = time.monotonic() + 15
        while not (tmp_path / "saved.up").exists():
            assert time.monotonic() < deadline, "the server never started"
            time.sleep(0.01)
        process.stop(grace=5.0)
        supervisor.stop_all()
    finally:
        run.remove()
    assert saved.read_text() == "saved"
