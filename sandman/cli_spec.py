"""The command line as data, read off `cli.build_parser()` each time it is asked for: the verbs,
their options and arguments, and what a shell may offer for each value. The completion scripts
(completion/) and the man pages (manpage.py) are made from it, so a verb or an option added to
the parser is in both without an edit, and neither can say what the parser does not.
"""

from __future__ import annotations

import argparse
from typing import NamedTuple

# What a shell may offer for a value: a directory, a file, an applied sandbox, any applied
# object (a sandbox, network/NAME, slice/NAME), an image, a directory or an object, one of the
# argument's choices, or nothing.
KINDS = ("dir", "file", "sandbox", "object", "image", "dir_or_object", "choice", "none")
# An argument's metavar says what it takes, unless cli.py marks it otherwise (cli.offers): the
# verbs added later (stop NAME, shell NAME) complete as the ones before them.
_BY_METAVAR = {
    "DIR": "dir",
    "DIR|NAME": "dir_or_object",
    "NAME": "sandbox",
    "PATH": "file",
    "FILE": "file",
    "SOURCE": "file",
}
REPEATING = ("+", "*", argparse.REMAINDER)


class Value(NamedTuple):
    """What an option or a positional argument takes."""

    metavar: str
    kind: str  # one of KINDS
    choices: tuple[str, ...] = ()


class Option(NamedTuple):
    flags: tuple[str, ...]  # "-n", "--lines"
    help: str
    value: Value | None  # None: a switch
    group: str  # the help section: "options", "paths"
    excludes: tuple[str, ...] = ()  # the flags of the options it is mutually exclusive with


class Positional(NamedTuple):
    value: Value
    help: str
    nargs: str | int | None

    @property
    def optional(self) -> bool:
        return self.nargs in ("?", "*", argparse.REMAINDER)

    @property
    def repeats(self) -> bool:
        return self.nargs in REPEATING


class Command(NamedTuple):
    """The whole command line (path ()), a verb (("plan",)) or a verb's action (("image",
    "import"))."""

    path: tuple[str, ...]
    summary: str  # the one line of the verb list
    description: str
    epilog: str
    options: tuple[Option, ...]
    positionals: tuple[Positional, ...]
    subcommands: tuple[Command, ...]

    @property
    def name(self) -> str:
        return " ".join(("sandman", *self.path))

    def walk(self) -> list[Command]:
        """This command and every command below it, parents first."""
        return [self, *(c for sub in self.subcommands for c in sub.walk())]


def command_line() -> Command:
    from sandman.cli import build_parser

    return _command(build_parser(), (), "")


def path_options(root: Command) -> tuple[str, ...]:
    """The flags of the options in the `paths` group of any verb: where a live query (the names
    of applied sandboxes) must look too."""
    return tuple(
        sorted({f for c in root.walk() for o in c.options if o.group == "paths" for f in o.flags})
    )


def _command(parser: argparse.ArgumentParser, path: tuple[str, ...], summary: str) -> Command:
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    subcommands: list[Command] = []
    for action in subparsers:
        summaries = {c.dest: c.help or "" for c in action._choices_actions}
        for name, sub in action.choices.items():
            subcommands.append(_command(sub, (*path, name), summaries.get(name, "")))
    return Command(
        path=path,
        summary=summary,
        description=parser.description or "",
        epilog=parser.epilog or "",
        options=tuple(_options(parser)),
        positionals=tuple(
            Positional(_value(a), _help(a), a.nargs)
            for a in parser._actions
            if not a.option_strings and not isinstance(a, argparse._SubParsersAction)
        ),
        subcommands=tuple(subcommands),
    )


def _options(parser: argparse.ArgumentParser) -> list[Option]:
    group_of = {
        id(a): g.title or "options" for g in parser._action_groups for a in g._group_actions
    }
    options = []
    for action in parser._actions:
        if not action.option_strings or action.help == argparse.SUPPRESS:
            continue
        value = None if action.nargs == 0 else _value(action)
        group = group_of.get(id(action), "options")
        options.append(
            Option(
                tuple(action.option_strings), _help(action), value, group, _excluded(parser, action)
            )
        )
    return options


def _excluded(parser: argparse.ArgumentParser, action: argparse.Action) -> tuple[str, ...]:
    return tuple(
        flag
        for group in parser._mutually_exclusive_groups
        if action in group._group_actions
        for other in group._group_actions
        if other is not action
        for flag in other.option_strings
    )


def _value(action: argparse.Action) -> Value:
    metavar = action.metavar if isinstance(action.metavar, str) else action.dest.upper()
    choices = tuple(str(c) for c in action.choices) if action.choices else ()
    marked = vars(action).get("offers")
    if isinstance(marked, str):
        kind = marked
    elif choices:
        kind = "choice"
    else:
        kind = _BY_METAVAR.get(metavar, "none")
    return Value(metavar, kind, choices)


def _help(action: argparse.Action) -> str:
    text = action.help or ""
    if "%" in text:  # argparse's own expansion: %(default)s and the like, %% for %
        text = text % {**vars(action), "prog": "sandman"}
    return text
