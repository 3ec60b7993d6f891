"""`command` services: dependency order, placeholders, every readiness check, crash reports."""

from __future__ import annotations

import sys
import urllib.request

import pytest

from testfleet.errors import ServiceError

pytestmark = pytest.mark.integration

PY = sys.executable
HTTP_SERVER = f"{PY} -m http.server {{port}} --bind 127.0.0.1"


def test_http_ready_and_dependency_env(make_stack, tmp_path):
    """The command sees its dependency's URL through a placeholder and the default env."""
    script = tmp_path / "app.py"
    script.write_text(
        "import os, sys, http.server\n"
        "open('seen.txt', 'w').write(os.environ['DB'] + ' ' + os.environ['VALKEY_URL'])\n"
        "http.server.test(http.server.SimpleHTTPRequestHandler, port=int(sys.argv[1]),"
        " bind='127.0.0.1')\n"
    )
    stack = make_stack(
        {
            "services": {
                "valkey": {},
                "api": {
                    "kind": "command",
                    "command": f"{PY} app.py {{port}}",
                    "depends-on": ["valkey"],
                    "env": {"DB": "{valkey.url}"},
                    "ready": {"http": "/"},
                    "export": {"API_URL": "{url}"},
                },
            }
        }
    )
    lane = stack.provision(1)
    with urllib.request.urlopen(lane.env["API_URL"]) as response:
        assert response.status == 200
    seen = (tmp_path / "seen.txt").read_text().split()
    assert seen == [lane.env["VALKEY_URL"]] * 2


def test_log_line_ready(make_stack):
    stack = make_stack(
        {
            "services": {
                "worker": {
                    "kind": "command",
                    "command": [PY, "-u", "-c", "import time; print('worker up'); time.sleep(60)"],
                    "ready": {"log": "worker up"},
                }
            }
        }
    )
    assert stack.provision(1).views["worker"].values["url"] == ""


def test_command_ready_check(make_stack):
    stack = make_stack(
        {
            "services": {
                "web": {
                    "kind": "command",
                    "command": HTTP_SERVER,
                    "ready": {
                        "command": f'{PY} -c "import urllib.request as u;'
                        " u.urlopen('http://127.0.0.1:{port}/')\""
                    },
                }
            }
        }
    )
    assert stack.provision(1).views["web"].values["port"].isdigit()


def test_crash_on_start_reports_log_tail(make_stack):
    with pytest.raises(ServiceError) as info:
        make_stack(
            {
                "services": {
                    "api": {
                        "kind": "command",
                        "command": "echo 'config missing: API_KEY' >&2; exit 4 # {port}",
                    }
                }
            }
        ).provision(1)
    assert info.value.message.startswith("api (lane 1) exited with code 4 while starting")
    assert "config missing: API_KEY" in info.value.details


def test_readiness_timeout_reports_last_check(make_stack):
    with pytest.raises(ServiceError) as info:
        make_stack(
            {
                "services": {
                    "slow": {
                        "kind": "command",
                        "command": "sleep 30 # {port}",
                        "start-timeout": 0.5,
                    }
                }
            }
        ).provision(1)
    assert "not ready after 0.5 s (last check: ConnectionRefusedError" in info.value.message
