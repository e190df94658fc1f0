"""Every verb has --help; validate reports in text and JSON; bad arguments exit 2."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from sandman.cli import build_parser, main

REPO = pathlib.Path(__file__).resolve().parents[2]


def _verbs() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.dest == "verb")
    assert action.choices is not None
    return sorted(action.choices)


@pytest.mark.parametrize("verb", _verbs())
def test_every_verb_has_help(verb: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([verb, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: sandman {verb}" in capsys.readouterr().out


def test_validate_shipped_units(capsys: pytest.CaptureFixture[str]) -> None:
    units = str(REPO / "units")
    assert main(["validate", units]) == 0
    assert capsys.readouterr().out == f"{units}: 3 sandboxes, 1 network, 1 slice: valid\n"
    assert main(["validate", units, "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data == {
        "valid": True,
        "directory": units,
        "units": {"sandbox": 3, "network": 1, "slice": 1},
    }


def test_validate_shipped_debian_boot_unit(capsys: pytest.CaptureFixture[str]) -> None:
    units = str(REPO / "units" / "debian")
    assert main(["validate", units]) == 0
    assert capsys.readouterr().out == f"{units}: 1 sandbox, 0 networks, 0 slices: valid\n"


def test_unknown_verb_is_bad_input(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["frobnicate"])
    assert exit_info.value.code == 2


def test_module_entry_point_runs() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sandman", "validate", str(REPO / "units")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_validate_does_not_import_kernel_side() -> None:
    code = (
        "import sys; from sandman.cli import main; main(['validate', sys.argv[1]]);"
        "heavy = ('pyroute2', 'sandman.kernel', 'ctypes', 'importlib.metadata');"
        "bad = [m for m in sys.modules if m.startswith(heavy)];"
        "print('IMPORTED:' + ','.join(bad))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(REPO / "units")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.splitlines()[-1] == "IMPORTED:"


def test_the_command_line_is_built_without_shutil(tmp_path: pathlib.Path) -> None:
    """argparse imports shutil (bz2, lzma) for the terminal's width: cli._Formatter does not."""
    code = (
        "import sys; from sandman.cli import main; main(['status', '--state-dir', sys.argv[1]]);"
        "print('IMPORTED:' + ','.join(m for m in ('shutil', 'bz2') if m in sys.modules))"
    )
    argv = [sys.executable, "-c", code, str(tmp_path)]
    result = subprocess.run(argv, capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "IMPORTED:"


def test_help_wraps_at_the_width_columns_says() -> None:
    argv = [sys.executable, "-m", "sandman", "status", "--help"]
    for columns in (50, 200):
        env = {**os.environ, "COLUMNS": str(columns)}
        out = subprocess.run(argv, capture_output=True, text=True, check=True, env=env).stdout
        widest = max(len(line) for line in out.splitlines())
        assert widest <= columns - 2
        assert (widest > 80) == (columns == 200)  # the usage on one line


def test_exec_options_may_follow_the_name_and_the_command_keeps_its_dashes() -> None:
    from sandman.cli import _parse

    args = _parse(["exec", "box", "--state-dir", "/tmp/x", "-t", "--", "grep", "--", "-v"])
    assert (args.name, args.state_dir, args.tty) == ("box", "/tmp/x", True)
    assert args.command == ["grep", "--", "-v"]


@pytest.mark.parametrize(
    "argv",
    [
        ["validate", "units", "--json"],
        ["plan", "units", "--no-prune", "--target", "web", "--detailed-exitcode"],
        ["apply", "units", "--no-wait", "--json", "--state-dir", "/tmp/x"],
        ["status", "web", "--json"],
        ["destroy", "units", "network/lan"],
        ["exec", "web", "-t", "sh", "-c", "true"],
        ["logs", "web", "-f"],
        ["logs", "web", "-f", "-n", "20", "--since", "2026-01-02T10:00:00Z", "-t", "--json"],
        ["images", "--json"],
        ["image", "import", "alpine", "rootfs.tar"],
        ["daemon", "units", "--on-stop", "stop", "--debounce", "0"],
        ["schema", "network"],
        ["top", "web", "db", "--interval", "0.5", "--once", "--json"],
        ["stats", "--no-stream"],
        ["shell", "web", "alice"],
    ],
)
def test_a_verb_alone_parses_as_the_whole_command_line(argv: list[str]) -> None:
    """main() builds only the verb asked for: it must read every argument as the whole does."""
    whole = build_parser().parse_args(argv)
    alone = build_parser(only=argv[0]).parse_args(argv)
    assert vars(alone) == vars(whole)


def test_every_verb_can_be_built_alone() -> None:
    from sandman.cli import VERBS

    assert sorted(VERBS) == _verbs()


@pytest.mark.parametrize("verb", ["plan", "apply"])
def test_prune_is_the_default_and_both_spellings_parse(verb: str) -> None:
    from sandman.cli import _parse

    assert _parse([verb, "units"]).no_prune is False
    assert _parse([verb, "units", "--prune"]).no_prune is False
    assert _parse([verb, "units", "--no-prune"]).no_prune is True


def test_a_verbs_bad_argument_prints_that_verbs_usage(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["logs", "web", "--lines", "2"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: sandman logs") and "unrecognized arguments: --lines 2" in err


def test_logs_since_takes_a_duration_ago_or_a_time() -> None:
    import time

    from sandman.cli import _parse

    ago = _parse(["logs", "web", "--since", "10min"]).since
    assert abs(ago - (time.time() - 600)) < 5
    assert _parse(["logs", "web", "--since", "2023-11-14T22:13:20Z"]).since == 1_700_000_000
    assert _parse(["logs", "web", "--since", "2023-11-14T23:13:20+01:00"]).since == 1_700_000_000
