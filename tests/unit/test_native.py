"""What a supervised server inherits: never the credentials meant for uv, and under another
account (PostgreSQL's, as root) nothing but the locale and PATH."""

from __future__ import annotations

import os
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
