"""Every bad unit directory of the corpus fails validation with exactly the expected problems.

Each case is `bad_units/CASE/`: the unit files, and `expected.txt` with the problem lines that
`sandman validate` prints, `{dir}` standing for the directory validated. A case whose argument is
not the directory itself (a missing directory, a file) names it, relative to the directory, in
`argument.txt`. Both files are left out of the copy that is validated.
"""

from __future__ import annotations

import json
import pathlib
import shutil
from typing import Any

import pytest

from sandman.cli import main
from sandman.errors import UnitProblem

CORPUS = pathlib.Path(__file__).parent / "bad_units"
CASES = sorted(p.name for p in CORPUS.iterdir() if p.is_dir())
# Enough to cover every check of the loader; see the issue for the list they must include.
MIN_CASES = 45
_NOT_UNITS = ("expected.txt", "argument.txt")


@pytest.fixture(autouse=True)
def _default_instance(monkeypatch: pytest.MonkeyPatch) -> None:
    """Derived interface names carry the instance tag: validate as the default instance."""
    for name in ("SANDMAN_STATE_DIR", "SANDMAN_IMAGE_DIR", "SANDMAN_LOG_DIR"):
        monkeypatch.delenv(name, raising=False)


def _prepare(case: str, tmp_path: pathlib.Path) -> tuple[str, str]:
    """Copy the case to a known place; (the argument to validate, the `{dir}` it stands for)."""
    source = CORPUS / case
    directory = tmp_path / case
    shutil.copytree(source, directory, ignore=shutil.ignore_patterns(*_NOT_UNITS))
    argument = source / "argument.txt"
    if argument.exists():
        return str(directory / argument.read_text().strip()), str(directory)
    return str(directory), str(directory)


def _expected(case: str, directory: str) -> list[str]:
    text = (CORPUS / case / "expected.txt").read_text()
    return text.replace("{dir}", directory).splitlines()


def _validate(
    case: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], *flags: str
) -> tuple[int, str, str, str]:
    argument, directory = _prepare(case, tmp_path)
    code = main(["validate", argument, *flags])
    captured = capsys.readouterr()
    return code, captured.out, captured.err, directory


def test_corpus_is_complete() -> None:
    assert len(CASES) >= MIN_CASES
    for case in CASES:
        lines = (CORPUS / case / "expected.txt").read_text().splitlines()
        assert lines, f"{case}: expected.txt is empty"
        assert all(line.startswith("{dir}") for line in lines), case


@pytest.mark.parametrize("case", CASES)
def test_bad_units_report_expected_problems(
    case: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err, directory = _validate(case, tmp_path, capsys)
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    *problems, summary = err.splitlines()
    expected = _expected(case, directory)
    assert problems == expected
    noun = "problem" if len(expected) == 1 else "problems"
    assert summary == f"sandman: {len(expected)} {noun} found; nothing was changed"


def _json_problems(out: str) -> list[dict[str, Any]]:
    data = json.loads(out)
    assert set(data) == {"error"}
    error = data["error"]
    assert error["kind"] == "invalid_units"
    assert error["message"].startswith(f"{len(error['problems'])} problem(s)")
    problems: list[dict[str, Any]] = error["problems"]
    return problems


def _file_level(problem: dict[str, Any]) -> bool:
    """Problems about a whole file or directory have no line: a bad name, an unreadable file, a
    missing top-level table (no line of the file holds it)."""
    key: str = problem["key"]
    top_level_table_missing = problem["message"] == "is missing" and key.isidentifier()
    return key == "" or top_level_table_missing


@pytest.mark.parametrize("case", CASES)
def test_json_problems_match_text(
    case: str, tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err, directory = _validate(case, tmp_path, capsys, "--json")
    assert code == 2
    problems = _json_problems(out)
    for problem in problems:
        assert set(problem) == {"file", "line", "key", "message", "hint"}
        assert problem["file"].startswith(directory)
        assert isinstance(problem["key"], str)
        assert problem["message"], "every problem says what is wrong"
        assert problem["hint"], "every problem says how to fix it"
        located = problem["message"].startswith(("TOML syntax error", "is not valid UTF-8"))
        if located or not _file_level(problem):
            assert isinstance(problem["line"], int), f"{problem} has no line"
        if problem["line"] is not None:
            assert problem["line"] >= 1
    # The JSON carries exactly what the text shows, in the same order.
    shown = [str(UnitProblem(**p)) for p in problems]
    assert shown == _expected(case, directory)
    assert err.splitlines()[:-1] == shown


@pytest.mark.parametrize(
    ("case", "problem"),
    [
        (
            "unknown-key-in-inline-table",
            {
                "file": "web.sandbox.toml",
                "line": 8,
                "key": "network.ports[1].proto",
                "message": "is not a known key",
                "hint": "did you mean 'protocol'? valid keys here: host, host_address, "
                "protocol, sandbox",
            },
        ),
        (
            "toml-syntax-missing-value",
            {
                "file": "lan.network.toml",
                "line": 2,
                "key": "",
                "message": "TOML syntax error: Invalid value (column 9)",
                "hint": "fix the syntax; see https://toml.io for the format",
            },
        ),
        (
            "empty-directory",
            {
                "file": "",
                "line": None,
                "key": "",
                "message": "holds no unit files",
                "hint": "add NAME.sandbox.toml, NAME.network.toml or NAME.slice.toml files; an "
                "empty directory is never taken to mean 'destroy everything'",
            },
        ),
        (
            "port-collision-wildcard",
            {
                "file": "web.sandbox.toml",
                "line": 6,
                "key": "network.ports[0].host",
                "message": "tcp port 8080 on 127.0.0.1 is already forwarded by sandbox 'api' "
                "(on all addresses)",
                "hint": "pick another host port or host_address",
            },
        ),
    ],
)
def test_json_problem_fields(
    case: str,
    problem: dict[str, Any],
    tmp_path: pathlib.Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _, directory = _validate(case, tmp_path, capsys, "--json")
    assert code == 2
    expected = {**problem, "file": str(pathlib.Path(directory, problem["file"]))}
    assert _json_problems(out) == [expected]
