"""The man pages are made from the parser: sandman(1) lists every verb, each verb's page holds
every option and argument of it (and of its actions), groff renders each without a warning, and
contrib/install-docs.sh (run by contrib/setup.sh) puts them and the completion scripts where
man, bash-completion and zsh look."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

import pytest

from sandman import cli
from sandman.cli_spec import Command, command_line
from sandman.manpage import pages, write

REPO = pathlib.Path(__file__).resolve().parents[2]
IN_CI = bool(os.environ.get("SANDMAN_CI") or os.environ.get("CI"))
VERBS = command_line().subcommands


def roff(text: str) -> str:
    return text.replace("\\", "\\e").replace("-", "\\-")


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if IN_CI:
            pytest.fail(f"{name} is missing: contrib/setup.sh --test installs it")
        pytest.skip(f"needs {name}")
    return found


def test_there_is_a_page_for_sandman_and_each_verb() -> None:
    names = {f"sandman-{verb.path[0]}.1" for verb in VERBS}
    assert set(pages()) == {"sandman.1", *names}
    main = pages()["sandman.1"]
    for verb in VERBS:
        assert f".BR sandman\\-{roff(verb.path[0])} (1)\n{verb.summary}" in main


@pytest.mark.parametrize("verb", VERBS, ids=lambda v: v.path[0])
def test_a_verbs_page_holds_every_option_and_argument(verb: Command) -> None:
    page = pages()[f"sandman-{verb.path[0]}.1"]
    for command in verb.walk():
        assert roff(command.name) in page
        for option in command.options:
            for flag in option.flags:
                assert f"\\fB{roff(flag)}\\fR" in page, flag
        for positional in command.positionals:
            assert f"\\fI{roff(positional.value.metavar)}\\fR" in page


def test_a_verb_added_to_the_parser_gets_a_page(monkeypatch: pytest.MonkeyPatch) -> None:
    def frob(verbs: cli._Verbs, paths: object, exec_remainder: bool) -> None:
        verbs.add_parser("frob", help="frobnicate", description="Frobnicate.")

    monkeypatch.setitem(cli.VERBS, "frob", frob)
    assert "sandman-frob.1" in pages()


def test_groff_renders_every_page_without_a_warning(tmp_path: pathlib.Path) -> None:
    groff = _tool("groff")
    for path in write(str(tmp_path)):
        done = subprocess.run(
            [groff, "-man", "-Tutf8", "-ww", "-z", path],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 0 and done.stderr == "", (path, done.stderr)


def test_man_shows_a_page(tmp_path: pathlib.Path) -> None:
    man = shutil.which("man")
    if man is None:
        pytest.skip("needs man (man-db)")
    (path,) = [p for p in write(str(tmp_path)) if p.endswith("sandman-plan.1")]
    done = subprocess.run(
        [man, "-l", path],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MANWIDTH": "80", "MAN_KEEP_FORMATTING": "", "PAGER": "cat"},
    )
    assert done.returncode == 0 and done.stderr == "", done.stderr
    text = done.stdout
    assert text.startswith("SANDMAN-PLAN(1)")
    assert "--detailed-exitcode" in text and "show what apply would change" in text


def test_install_docs_puts_completion_and_pages_where_they_are_looked_for(
    tmp_path: pathlib.Path,
) -> None:
    """What contrib/setup.sh installs, into a scratch SHARE instead of /usr/local/share."""
    subprocess.run(["sh", str(REPO / "contrib" / "install-docs.sh"), str(tmp_path)], check=True)
    bash = tmp_path / "bash-completion" / "completions" / "sandman"
    zsh = tmp_path / "zsh" / "site-functions" / "_sandman"
    assert bash.read_text().rstrip().endswith("complete -F _sandman sandman")
    assert zsh.read_text().startswith("#compdef sandman\n")
    man1 = tmp_path / "man" / "man1"
    assert sorted(p.name for p in man1.iterdir()) == sorted(pages())
    # A page of a verb that no longer exists goes at the next install.
    (man1 / "sandman-gone.1").write_text(".TH SANDMAN-GONE 1\n")
    subprocess.run(["sh", str(REPO / "contrib" / "install-docs.sh"), str(tmp_path)], check=True)
    assert not (man1 / "sandman-gone.1").exists()
