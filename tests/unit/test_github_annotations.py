"""Failing tests as GitHub Actions annotations: where the lane says a test failed (through
pytester and a scripted coordinator), and the `::error ...::` lines made of it."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from testfleet.reports.github import LIMIT, annotation, error_lines, escape_property
from testfleet.reports.step_summary import markdown
from testfleet.results import TestResult
from tests.unit.test_lane_plugin import run_lane

pytest_plugins = ["pytester"]


def test_the_lane_reports_the_failing_line_in_the_test_file(
    pytester: pytest.Pytester, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    """The deepest frame in the test's own file (a helper it calls there), not the library's
    frame the exception came from; a fixture that broke in conftest.py gives the test's own
    line; a passing test carries no location."""
    pytester.makeconftest(
        """
        import pytest
        @pytest.fixture
        def broken():
            raise RuntimeError("setup broke")
        """
    )
    source = textwrap.dedent(
        """\
        import json

        def check(value):
            assert value == 2, "not two"

        def test_helper():
            check(1)

        def test_library():
            json.loads("not json")

        def test_fixture(broken):
            pass

        def test_pass():
            pass
        """
    )
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_where.py").write_text(source)
    ids = [f"tests/test_where.py::test_{n}" for n in ("helper", "library", "fixture", "pass")]
    _, coordinator = run_lane(pytester, tmp_path, [ids], monkeypatch)
    where = {
        m["nodeid"].rsplit("::", 1)[1]: (m.get("file"), m.get("line"))
        for m in coordinator.of("result")
    }
    assert where == {
        "test_helper": ("tests/test_where.py", 4),
        "test_library": ("tests/test_where.py", 10),
        "test_fixture": ("tests/test_where.py", 12),
        "test_pass": (None, None),
    }


def failed(nodeid: str = "tests/test_a.py::test_x", **fields: object) -> TestResult:
    values: dict[str, object] = {"message": "assert 1 == 2", "file": "tests/test_a.py", "line": 7}
    values.update(fields)
    return TestResult(nodeid, "failed", **values)  # type: ignore[arg-type]


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository whose project is in a subdirectory, with one test file."""
    test_file = tmp_path / "services" / "shop" / "tests" / "test_a.py"
    test_file.parent.mkdir(parents=True)
    test_file.write_text("def test_x(): pass\n")
    return tmp_path


def test_annotation_names_the_file_from_the_repository_root(repo: Path):
    """The path is relative to $GITHUB_WORKSPACE, not to the project; `:` and `,` in the node
    id are escaped as properties, the message's newlines as data."""
    result = failed(
        "tests/test_a.py::test_x[a,b]", message="boom: 100%", verdict="order dependent\nyes"
    )
    line = annotation(result, root=repo / "services" / "shop", workspace=repo, versions={})
    assert line == (
        "::error file=services/shop/tests/test_a.py,line=7,"
        "title=tests/test_a.py%3A%3Atest_x[a%2Cb]::failed: boom: 100%25%0Aorder dependent%0Ayes"
    )


def test_a_crashed_test_has_its_file_but_no_line(repo: Path):
    """A lane that crashed said nothing of where: the file comes from the node id."""
    result = TestResult("tests/test_a.py::test_x", "error", message="lane 1 crashed")
    line = annotation(result, root=repo / "services" / "shop", workspace=repo, versions={})
    assert line.startswith("::error file=services/shop/tests/test_a.py,title=")
    assert ",line=" not in line


def test_a_file_outside_the_workspace_is_not_named(repo: Path, tmp_path: Path):
    """GitHub would attach it to the wrong file or none: the annotation keeps its title."""
    workspace = tmp_path / "elsewhere"
    workspace.mkdir()
    line = annotation(failed(), root=repo / "services" / "shop", workspace=workspace, versions={})
    assert line.startswith("::error title=tests/test_a.py%3A%3Atest_x::")


def test_annotations_are_capped_and_say_how_many_more(repo: Path):
    """Only failing tests; at most LIMIT lines, and the count of the rest."""
    results = [failed(f"tests/test_a.py::test_{i}") for i in range(LIMIT + 3)]
    results.append(TestResult("tests/test_a.py::test_ok", "passed"))
    lines, more = error_lines(results, root=repo / "services" / "shop", workspace=repo, versions={})
    assert len(lines) == LIMIT
    assert more == 3


def test_property_escaping_follows_the_runner():
    assert escape_property("a%b\r\nc:d,e") == "a%25b%0D%0Ac%3Ad%2Ce"


def test_a_shards_step_summary_names_the_shard():
    """A shard writes its own part of the job page, named, with its failures."""
    text = markdown([failed()], {"": "3.12.4"}, None, title="testfleet: shard 1/2, Python 3.12.4")
    assert text.startswith("## testfleet: shard 1/2, Python 3.12.4\n")
    assert "`tests/test_a.py::test_x`" in text


def test_run_titles_name_the_shard_and_the_pythons():
    """What a run calls its part of the CI page: the shard, the Python versions."""
    from testfleet.commands.run import run_title

    assert run_title((1, 2), {"": "3.12.4"}) == "testfleet: shard 1/2, Python 3.12.4"
    assert run_title(None, {"3.11": "3.11.9", "3.12": "3.12.4"}) == (
        "testfleet: Python 3.11.9, 3.12.4"
    )
    assert run_title(None, {}) == "testfleet"


def test_where_a_test_failed_survives_the_results_file(tmp_path: Path):
    """A shard's results file keeps each failure's file and line; files written before they
    existed read as unknown."""
    import json

    from testfleet.reports.results_file import read_results, write_results

    path = tmp_path / "results.json"
    write_results(path, [failed()], python="3.12.4", collect_errors={})
    (result,), _, _ = read_results(path)
    assert (result.file, result.line) == ("tests/test_a.py", 7)
    document = json.loads(path.read_text())
    for entry in document["results"]:
        del entry["file"], entry["line"]
    path.write_text(json.dumps(document))
    (result,), _, _ = read_results(path)
    assert (result.file, result.line) == ("", None)
