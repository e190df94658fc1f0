"""sandman-oci's argparse-free reading of the engines' usual command lines (fast_args) against
argparse's reading of the same line: the same values whenever it answers, and no answer (so
argparse reads it, with its help and errors) on anything it is not sure of."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sandman.oci import fast_args
from sandman.oci.args import parser
from sandman.oci.options import GLOBAL, SIMPLE_VERBS, Option

# What conmon (podman) and containerd's shim pass, as they pass it.
ENGINE_LINES = [
    ["--root", "/run/r", "--log", "/l", "--log-format", "json", "--systemd-cgroup", "create",
     "--bundle", "/b", "--pid-file", "/p", "--console-socket", "/s", "c1"],
    ["--root=/run/r", "--log=/l", "--log-format=json", "create", "--bundle=/b", "--no-pivot",
     "--no-new-keyring", "--preserve-fds", "0", "c1"],
    ["--root", "/run/r", "start", "c1"],
    ["--root", "/run/r", "--log-format", "json", "state", "c1"],
    ["--root", "/run/r", "kill", "c1", "15"],
    ["--root", "/run/r", "kill", "--all", "c1", "KILL"],
    ["kill", "c1"],
    ["--root", "/run/r", "delete", "--force", "c1"],
    ["delete", "c1", "-f"],
    ["--debug", "-v", "state", "c1"],
]  # fmt: skip


def argparse_reading(argv: list[str]) -> dict[str, object] | None:
    """vars() of argparse's namespace, or None where it refuses the line (or prints help)."""
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        try:
            return vars(parser().parse_args(argv))
        except SystemExit:
            return None


@pytest.mark.parametrize("argv", ENGINE_LINES)
def test_the_engines_lines_are_read_without_argparse_as_argparse_reads_them(
    argv: list[str],
) -> None:
    fast = fast_args.read(argv)
    assert fast is not None, argv
    assert fast == argparse_reading(argv)


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["state", "--help"],
        ["--roo", "/r", "state", "c1"],  # an abbreviation: argparse's to take
        ["delete", "--forc", "c1"],
        ["create", "-b=/b", "c1"],  # argparse reads "=/b" as the value
        ["create", "-b/b", "c1"],
        ["kill", "c1", "-9"],  # a negative-number positional
        ["state", "--", "c1"],
        ["state"],
        ["state", "c1", "c2"],
        ["--log-format", "xml", "state", "c1"],
        ["--log", "--debug", "state", "c1"],
        ["create", "--preserve-fds", "x", "c1"],
        ["create", "--preserve-fds", "+1", "c1"],
        ["state", "--root", "/r", "c1"],  # a global option after the verb
        ["--systemd-cgroup=yes", "state", "c1"],
        ["exec", "c1", "true"],  # not an engine-per-container verb: argparse's
        ["stat", "c1"],
    ],
)
def test_a_line_it_is_not_sure_of_is_left_to_argparse(argv: list[str]) -> None:
    assert fast_args.read(argv) is None


WORDS = [
    "--root", "--root=/r", "/r", "--log", "--log-format", "json", "xml", "--debug", "-v", "create",
    "kill", "exec", "--bundle", "-b", "--preserve-fds", "0", "-1", "--all", "-a", "--force", "-f",
    "c1", "KILL", "9", "--", "-h", "--forc", "-", "",
]  # fmt: skip


def spelled(draw: st.DrawFn, option: Option) -> list[str]:
    """One option as a client may write it: any of its names; a value apart or after `=`."""
    name = draw(st.sampled_from(option.flags))
    if option.kind == "flag":
        return [name]
    value = draw(
        st.sampled_from(option.choices)
        if option.choices
        else st.sampled_from(["0", "3"] if option.kind == "int" else ["/x", "c1", "state", "0"])
    )
    return [f"{name}={value}"] if name.startswith("--") and draw(st.booleans()) else [name, value]


@st.composite
def engine_line(draw: st.DrawFn) -> tuple[list[str], bool]:
    """A well-formed line of a verb fast_args reads (global options, the verb, its options
    before and after one run of positionals), and sometimes one stray word put in: (words,
    whether it is well formed)."""
    words: list[str] = []
    for option in draw(st.lists(st.sampled_from(GLOBAL), max_size=4)):
        words += spelled(draw, option)
    verb = draw(st.sampled_from(sorted(SIMPLE_VERBS)))
    options, positionals = SIMPLE_VERBS[verb]
    required = sum(positional.default is None for positional in positionals)
    count = draw(st.integers(required, len(positionals)))
    run = [draw(st.sampled_from(["c1", "c-2", "KILL", "9", "state"])) for _ in range(count)]
    before: list[str] = []
    after: list[str] = []
    for option in draw(st.lists(st.sampled_from(options), max_size=4)) if options else []:
        (before if draw(st.booleans()) else after).extend(spelled(draw, option))
    words += [verb, *before, *run, *after]
    if draw(st.integers(0, 2)) == 0:
        words.insert(draw(st.integers(0, len(words))), draw(st.sampled_from(WORDS)))
        return words, False
    return words, True


@settings(max_examples=2000, deadline=None)
@given(engine_line())
def test_whatever_the_line_it_reads_it_as_argparse_or_leaves_it(
    line: tuple[list[str], bool],
) -> None:
    argv, well_formed = line
    fast, expected = fast_args.read(argv), argparse_reading(argv)
    if well_formed:
        assert expected is not None and fast == expected, argv
    elif fast is not None:
        assert fast == expected, argv
