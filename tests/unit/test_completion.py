"""The completion scripts, run for real: bash with COMP_WORDS and COMP_CWORD set and the
completion function called; zsh in a pseudo-terminal, TAB pressed (zsh_complete.zsh). They are
made from the parser at run time, so every verb and option of it is offered, a verb added to
the parser too, and the names of applied objects come from `sandman status --json` (a stub
here, which logs how it was asked).
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from sandman import cli
from sandman.cli_spec import Command, command_line
from sandman.completion import script

HERE = pathlib.Path(__file__).parent
IN_CI = bool(os.environ.get("SANDMAN_CI") or os.environ.get("CI"))
STATUS = {
    "sandboxes": [{"name": "web", "network": {"address": None}}, {"name": "worker"}],
    "networks": [{"name": "lan"}],
    "slices": [{"name": "services"}],
}
IMAGES = {"images": [{"name": "alpine"}, {"name": "busybox"}]}


@pytest.fixture
def stub(tmp_path: pathlib.Path) -> pathlib.Path:
    """A `sandman` that answers status --json and images --json and logs its arguments; its
    directory also holds the zsh script and a unit directory beside a file."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "sandman"
    program.write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        f"open({str(tmp_path / 'asked')!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
        f"print({json.dumps(STATUS)!r} if sys.argv[1] == 'status' else {json.dumps(IMAGES)!r})\n"
    )
    program.chmod(0o755)
    (bin_dir / "_sandman").write_text(script("zsh"))
    (tmp_path / "units").mkdir()
    (tmp_path / "notes.txt").write_text("")
    return program


def asked(stub: pathlib.Path) -> list[str]:
    return (stub.parent.parent / "asked").read_text().splitlines()


def bash(stub: pathlib.Path, *words: str, text: str | None = None) -> list[str]:
    """COMPREPLY for the command line `stub WORDS...`, the cursor in the last word."""
    path = stub.parent / "sandman.bash"
    path.write_text(text or script("bash"))
    program = (
        'source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _sandman; '
        'printf "%s\\n" "${COMPREPLY[@]}"'
    )
    done = subprocess.run(
        ["bash", "--norc", "--noprofile", "-c", program, "bash", str(path), str(stub), *words],
        cwd=stub.parent.parent,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0 and done.stderr == "", done
    return sorted(line for line in done.stdout.splitlines() if line)


def commands() -> list[Command]:
    return [c for c in command_line().walk() if c.path]


def flags(command: Command) -> list[str]:
    return sorted(flag for option in command.options for flag in option.flags)


# --- bash ---------------------------------------------------------------------------------------


def test_bash_offers_every_verb(stub: pathlib.Path) -> None:
    verbs = sorted(verb.path[0] for verb in command_line().subcommands)
    assert bash(stub, "") == verbs
    assert bash(stub, "ap") == ["apply"]
    assert bash(stub, "image", "") == ["bootstrap", "busybox", "import", "remove"]


@pytest.mark.parametrize("command", commands(), ids=lambda c: c.name)
def test_bash_offers_every_option_of_each_command(stub: pathlib.Path, command: Command) -> None:
    assert bash(stub, *command.path, "-") == flags(command)


def test_bash_offers_the_options_of_apply(stub: pathlib.Path) -> None:
    offered = bash(stub, "apply", "--")
    assert {"--prune", "--no-prune", "--no-wait", "--target", "--json", "--state-dir"} <= set(
        offered
    )
    assert bash(stub, "apply", "--no-") == ["--no-prune", "--no-wait"]
    # A directory given, what remains are the options.
    assert "--json" in bash(stub, "apply", "units", "")


def test_bash_offers_directories_for_dir_and_files_for_a_source(stub: pathlib.Path) -> None:
    assert bash(stub, "apply", "") == ["bin", "units"]
    assert bash(stub, "plan", "--state-dir", "u") == ["units"]
    assert bash(stub, "plan", "--state-dir", "=", "u") == ["units"]
    assert bash(stub, "plan", "--state-dir", "=") == ["bin", "units"]
    assert bash(stub, "image", "import", "alpine", "") == ["bin", "notes.txt", "units"]
    assert bash(stub, "image", "import", "") == []  # a new image's name: nothing to offer


def test_bash_offers_choices(stub: pathlib.Path) -> None:
    assert bash(stub, "daemon", "--on-stop", "") == ["keep", "stop"]
    assert bash(stub, "schema", "") == ["network", "sandbox", "slice"]
    assert bash(stub, "completion", "") == ["bash", "zsh"]


def test_bash_offers_applied_names_from_sandman_itself(stub: pathlib.Path) -> None:
    assert bash(stub, "exec", "") == ["web", "worker"]
    assert bash(stub, "logs", "wo") == ["worker"]
    assert bash(stub, "image", "remove", "") == ["alpine", "busybox"]
    objects = ["network/lan", "slice/services", "web", "worker"]
    assert bash(stub, "plan", "units", "--target", "") == objects
    # destroy takes directories and objects, as many as given.
    assert bash(stub, "destroy", "web", "") == sorted(["bin", "units", *objects])
    assert asked(stub) == ["status --json"] * 2 + ["images --json"] + ["status --json"] * 2


def test_bash_asks_with_the_path_options_typed(stub: pathlib.Path) -> None:
    bash(stub, "status", "--state-dir", "/srv/state", "")
    bash(stub, "show", "--state-dir", "=", "/srv/other", "-n", "5", "")
    assert asked(stub) == [
        "status --json --state-dir /srv/state",
        "status --json --state-dir /srv/other",
    ]


def test_bash_offers_nothing_for_the_command_of_exec(stub: pathlib.Path) -> None:
    assert bash(stub, "exec", "web", "--", "") == []
    assert bash(stub, "exec", "web", "--", "-") == []
    assert bash(stub, "exec", "-t", "web", "") == []


def test_a_verb_added_to_the_parser_is_completed_without_an_edit(
    stub: pathlib.Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def frob(verbs: cli._Verbs, paths: object, exec_remainder: bool) -> None:
        parser = verbs.add_parser("frob", help="frobnicate a sandbox")
        parser.add_argument("name", metavar="NAME", help="the sandbox")
        parser.add_argument("--level", choices=("low", "high"), help="how hard")

    monkeypatch.setitem(cli.VERBS, "frob", frob)
    text = script("bash")
    assert bash(stub, "fr", text=text) == ["frob"]
    assert bash(stub, "frob", "", text=text) == ["web", "worker"]
    assert bash(stub, "frob", "--level", "", text=text) == ["high", "low"]
    assert "frob" in script("zsh")


# --- zsh ----------------------------------------------------------------------------------------


def _zsh() -> str:
    found = shutil.which("zsh")
    if found is None:
        if IN_CI:
            pytest.fail("zsh is missing: contrib/setup.sh --test installs it")
        pytest.skip("needs zsh (contrib/setup.sh --test installs it)")
    return found


def zsh(stub: pathlib.Path, line: str) -> list[str]:
    """What zsh offers on TAB after `line`, `sandman` being the stub (first on $PATH)."""
    done = subprocess.run(
        [_zsh(), str(HERE / "zsh_complete.zsh"), str(stub.parent), line],
        cwd=stub.parent.parent,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "TERM": "dumb"},
    )
    lines = [line.strip() for line in done.stdout.replace("\r", "\n").splitlines()]
    assert "@@END" in lines, done
    return sorted({line[2:] for line in lines if line.startswith("@@") and line != "@@END"})


def test_zsh_script_is_valid(stub: pathlib.Path) -> None:
    done = subprocess.run(
        [_zsh(), "-n", str(stub.parent / "_sandman")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0 and done.stderr == "", done


def test_zsh_offers_verbs_options_choices_and_files(stub: pathlib.Path) -> None:
    verbs = sorted(verb.path[0] for verb in command_line().subcommands)
    assert zsh(stub, "sandman ") == verbs
    assert zsh(stub, "sandman image ") == ["bootstrap", "busybox", "import", "remove"]
    (apply,) = [c for c in commands() if c.path == ("apply",)]
    assert zsh(stub, "sandman apply -") == flags(apply)
    assert zsh(stub, "sandman daemon --on-stop ") == ["keep", "stop"]
    assert zsh(stub, "sandman apply ") == ["bin", "units"]


def test_zsh_offers_applied_names_from_sandman_itself(stub: pathlib.Path) -> None:
    assert zsh(stub, "sandman exec ") == ["web", "worker"]
    assert zsh(stub, "sandman image remove ") == ["alpine", "busybox"]
    objects = ["network/lan", "slice/services", "web", "worker"]
    assert zsh(stub, "sandman destroy --state-dir=/srv/state ") == sorted(
        ["bin", "units", *objects]
    )
    assert zsh(stub, "sandman exec web -- ") == []
    assert "status --json --state-dir=/srv/state" in asked(stub)
