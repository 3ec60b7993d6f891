"""What the generated CI files install: the testfleet that wrote them, pinned, read from how
it was installed (PEP 610's direct_url.json), or what the user names."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import pytest

from testfleet.ci import install
from testfleet.cli import build_parser
from testfleet.commands import Call
from testfleet.commands import ci as ci_command
from testfleet.errors import ConfigError
from tests.helpers import write_pyproject

EXTRAS = ("valkey", "postgres")


def spec(direct_url: Mapping[str, object] | None) -> str:
    text = None if direct_url is None else json.dumps(direct_url)
    return install.from_direct_url(text, "1.4.2", EXTRAS)


def test_from_an_index_the_version_is_pinned():
    assert spec(None) == "testfleet[postgres,valkey]==1.4.2"
    assert install.from_direct_url(None, "1.4.2", ()) == "testfleet==1.4.2"


def test_from_git_the_installed_commit():
    commit = "0123456789abcdef0123456789abcdef01234567"
    url = {
        "url": "https://github.com/acme/testfleet",
        "vcs_info": {"vcs": "git", "commit_id": commit, "requested_revision": "main"},
    }
    assert (
        spec(url) == f"testfleet[postgres,valkey] @ git+https://github.com/acme/testfleet@{commit}"
    )
    nested = {**url, "subdirectory": "tools/testfleet"}
    assert spec(nested).endswith(f"@{commit}#subdirectory=tools/testfleet")


def test_from_an_archive_url_with_its_hash():
    url = {
        "url": "https://files.example/testfleet-1.4.2-py3-none-any.whl",
        "archive_info": {"hashes": {"sha256": "ab" * 32}},
    }
    assert spec(url) == (
        "testfleet[postgres,valkey] @ https://files.example/testfleet-1.4.2-py3-none-any.whl"
        f"#sha256={'ab' * 32}"
    )


@pytest.mark.parametrize(
    ("direct_url", "said"),
    [
        ({"url": "file:///src/testfleet", "dir_info": {"editable": True}}, "an editable install"),
        ({"url": "file:///src/testfleet", "dir_info": {}}, "a local directory"),
        ({"url": "file:///tmp/testfleet-1.whl", "archive_info": {}}, "a local file"),
        (
            {"url": "file:///src/testfleet", "vcs_info": {"vcs": "git", "commit_id": "ab"}},
            "a local git repository",
        ),
        ({"nonsense": True}, "unreadable"),
    ],
)
def test_what_ci_cannot_reach_is_refused_naming_the_option(
    direct_url: dict[str, object], said: str
):
    with pytest.raises(ConfigError) as caught:
        spec(direct_url)
    message = caught.value.message
    assert said in message
    assert "--testfleet-spec" in message
    assert "[tool.testfleet.ci]" in message
    assert "\n" not in message


def test_this_editable_checkout_is_refused_and_a_given_spec_is_used(tmp_path: Path):
    """The test suite runs from an editable install: `testfleet ci` refuses to write it into
    a file, in one line; with --testfleet-spec every job installs exactly that."""
    root = write_pyproject(tmp_path / "p", "[tool.testfleet]\n[tool.testfleet.services.valkey]\n")

    def generate(*argv: str) -> int:
        args = build_parser("ci").parse_args(["-C", str(root), "ci", *argv])
        return ci_command.main(Call(args))

    with pytest.raises(ConfigError, match=r"editable install.*--testfleet-spec"):
        generate("github")
    assert not (root / ".github").exists()
    given = "testfleet[valkey] @ git+https://git.example/testfleet@0123456789abcdef"
    assert generate("github", "--testfleet-spec", given) == 0
    assert generate("gitlab", "--testfleet-spec", given) == 0
    workflow = (root / ".github/workflows/tests.yml").read_text()
    assert workflow.count(f'SPEC: "{given}"') == 2  # the shards' job and the merge job
    assert 'uv tool install "$SPEC"' in workflow
    pipeline = (root / ".gitlab-ci.yml").read_text()
    assert pipeline.count(f"uv tool install '{given}'") == 2


def test_the_config_names_the_spec(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    """testfleet-spec in [tool.testfleet.ci] counts when no flag names one."""
    given = "testfleet[valkey]==9.9.9"
    root = write_pyproject(
        tmp_path / "p",
        "[tool.testfleet]\n[tool.testfleet.services.valkey]\n"
        f'[tool.testfleet.ci]\ntestfleet-spec = "{given}"\n',
    )
    args = build_parser("ci").parse_args(["-C", str(root), "ci", "github", "--stdout"])
    assert ci_command.main(Call(args)) == 0
    printed = capsys.readouterr().out
    assert printed.count(f'SPEC: "{given}"') == 2
    assert "(from testfleet-spec in [tool.testfleet.ci])" in printed


def test_config_typos_in_the_ci_table_are_one_line(tmp_path: Path):
    root = write_pyproject(
        tmp_path / "p", '[tool.testfleet]\n[tool.testfleet.ci]\ntestfleet-sepc = "x"\n'
    )
    args = build_parser("ci").parse_args(["-C", str(root), "ci", "github", "--stdout"])
    with pytest.raises(ConfigError, match=r"testfleet-sepc.*testfleet-spec"):
        ci_command.main(Call(args))
