"""The command lines engines pass on every container call, read without argparse.

Podman (through conmon) and containerd's shim start the runtime three to five times per
container; importing argparse (with gettext, locale and shutil) and building a parser is about a
sixth of a `state` or `start` call. `read` takes the global options and one of options.py's
SIMPLE_VERBS, and gives what argparse would give (vars of its namespace), or None for anything
else: --help, an abbreviation, `--`, a short option with its value attached, an unknown word, a
bad number or choice, a value that looks like an option. argparse then reads the line, with its
help and its error messages; a unit test holds the two to the same answers."""

from __future__ import annotations

from collections.abc import Sequence

from sandman.oci.options import GLOBAL, SIMPLE_VERBS, Option, Positional


def read(argv: Sequence[str]) -> dict[str, object] | None:
    values: dict[str, object] = {option.dest: option.default for option in GLOBAL}
    words = list(argv)
    at = _options(GLOBAL, words, 0, values)
    if at is None or at >= len(words) or words[at] not in SIMPLE_VERBS:
        return None
    values["verb"] = verb = words[at]
    options, positionals = SIMPLE_VERBS[verb]
    values.update({option.dest: option.default for option in options})
    return values if _verb_words(options, positionals, words[at + 1 :], values) else None


def _verb_words(
    options: tuple[Option, ...],
    positionals: tuple[Positional, ...],
    words: list[str],
    values: dict[str, object],
) -> bool:
    """Options before and after the positionals, which are one run of words: argparse matches
    a run to as many positionals as it can at once (an optional one to its default), so it
    refuses a second run (`kill c1 --all 9`)."""
    given: list[str] = []
    run_over = False
    at = 0
    while at < len(words):
        if words[at].startswith("-"):
            following = _options(options, words, at, values)
            if following is None or following == at:
                return False
            at, run_over = following, bool(given)
        elif run_over:
            return False
        else:
            given.append(words[at])
            at += 1
    required = sum(positional.default is None for positional in positionals)
    if not required <= len(given) <= len(positionals):
        return False
    for positional, word in zip(positionals, given, strict=False):
        values[positional.dest] = word
    for positional in positionals[len(given) :]:
        values[positional.dest] = positional.default
    return True


def _options(
    table: tuple[Option, ...], words: list[str], at: int, values: dict[str, object]
) -> int | None:
    """Read the options from `at` up to the first word that is not one; None on any doubt."""
    by_flag = {flag: option for option in table for flag in option.flags}
    while at < len(words) and words[at].startswith("-"):
        name, joined, value = words[at].partition("=")
        option = by_flag.get(name)
        if option is None or (joined and (option.kind == "flag" or not name.startswith("--"))):
            return None
        at += 1
        if option.kind == "flag":
            values[option.dest] = True
            continue
        if not joined:
            if at >= len(words) or words[at].startswith("-"):
                return None
            value, at = words[at], at + 1
        taken = _value(option, value)
        if taken is None:
            return None
        values[option.dest] = taken
    return at


def _value(option: Option, text: str) -> object | None:
    if option.choices is not None and text not in option.choices:
        return None
    if option.kind == "int":
        return int(text) if text.isascii() and text.isdigit() else None
    return text
