"""Man pages made from the command line (cli_spec.py): sandman(1), which lists the verbs, and
sandman-VERB(1) for each verb, a verb's actions (image busybox, import, remove) as its
subsections. contrib/setup.sh writes them at install time: `python -m sandman.manpage DIR`.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator

from sandman import __version__
from sandman.cli_spec import Command, Option, Positional, command_line

_SECTION = "1"
_MANUAL = "sandman manual"
_CODE = re.compile(r"`([^`]+)`")


def pages(root: Command | None = None) -> dict[str, str]:
    """File name -> roff source, for sandman(1) and each verb's page."""
    root = root or command_line()
    found = {f"sandman.{_SECTION}": _main_page(root)}
    for verb in root.subcommands:
        found[f"{_page_name(verb)}.{_SECTION}"] = _verb_page(verb)
    return found


def write(directory: str) -> list[str]:
    """Write every page into DIRECTORY; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    written = []
    for name, text in pages().items():
        path = os.path.join(directory, name)
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(
            "usage: python -m sandman.manpage DIR  (writes sandman.1, sandman-VERB.1)",
            file=sys.stderr,
        )
        return 2
    for path in write(argv[0]):
        print(path)
    return 0


# --- pages ---------------------------------------------------------------------------------------


def _main_page(root: Command) -> str:
    lines = [
        *_head("sandman", root.description),
        ".SH SYNOPSIS",
        r".B sandman",
        r".I VERB",
        r"[\fIOPTIONS\fR] [\fIARGUMENTS\fR]",
        ".SH DESCRIPTION",
        _text(root.description),
        ".PP",
        _text(root.epilog),
        ".PP",
        _text("`sandman VERB --help` and sandman-VERB(1) describe each verb."),
        ".SH VERBS",
    ]
    for verb in root.subcommands:
        lines += [".TP", f".BR {_roff_name(_page_name(verb))} ({_SECTION})", _text(verb.summary)]
    lines += _options_section(root)
    see = [f".BR {_roff_name(_page_name(v))} ({_SECTION})" for v in root.subcommands]
    lines += [".SH SEE ALSO", ".nh", *_commas(see)]  # .nh: no page name broken in two
    return "\n".join(lines) + "\n"


def _verb_page(verb: Command) -> str:
    lines = [*_head(_page_name(verb), verb.summary), ".SH SYNOPSIS"]
    lines += [_synopsis(c) for c in (verb.subcommands or (verb,))]
    lines += [".SH DESCRIPTION", _text(verb.description)]
    lines += _arguments_section(verb)
    lines += _options_section(verb)
    if verb.subcommands:
        lines.append(".SH ACTIONS")
        for action in verb.subcommands:
            lines += [f'.SS "{_escape(action.name)}"', _synopsis(action), ".PP"]
            lines += [_text(action.description), *_items(action)]
    lines += [".SH SEE ALSO", f".BR sandman ({_SECTION})"]
    return "\n".join(lines) + "\n"


def _head(name: str, summary: str) -> list[str]:
    title = f'.TH {name.upper()} {_SECTION} "" "sandman {__version__}" "{_MANUAL}"'
    return [title, ".SH NAME", f"{_roff_name(name)} \\- {_text(_one_line(summary))}"]


def _arguments_section(command: Command) -> list[str]:
    if not command.positionals:
        return []
    return [".SH ARGUMENTS", *(line for p in command.positionals for line in _positional(p))]


def _options_section(command: Command) -> list[str]:
    """One section per help group: OPTIONS, and PATHS for the path options."""
    lines: list[str] = []
    for group in dict.fromkeys(o.group for o in command.options):
        lines.append(f".SH {_escape(group.upper())}")
        lines += [line for o in command.options if o.group == group for line in _option(o)]
    return lines


def _items(command: Command) -> Iterator[str]:
    """An action's arguments and options, under its subsection."""
    for positional in command.positionals:
        yield from _positional(positional)
    for option in command.options:
        yield from _option(option)


def _positional(positional: Positional) -> list[str]:
    described = [_text(positional.help)] if positional.help else []
    return [".TP", f"\\fI{_escape(positional.value.metavar)}\\fR", *described]


def _option(option: Option) -> list[str]:
    flags = ", ".join(f"\\fB{_escape(flag)}\\fR" for flag in option.flags)
    if option.value is not None:
        flags += f" \\fI{_escape(_value_name(option))}\\fR"
    return [".TP", flags, *([_text(option.help)] if option.help else [])]


def _synopsis(command: Command) -> str:
    words = [f"\\fB{_escape(command.name)}\\fR"]
    if command.options:
        words.append("[\\fIOPTIONS\\fR]")
    for positional in command.positionals:
        shown = f"\\fI{_escape(positional.value.metavar)}\\fR"
        shown += " ..." if positional.repeats else ""
        words.append(f"[{shown}]" if positional.optional else shown)
    if command.subcommands:
        words.append("\\fIACTION\\fR")
    return ".PP\n" + " ".join(words)


def _value_name(option: Option) -> str:
    assert option.value is not None
    return "|".join(option.value.choices) or option.value.metavar


# --- roff -----------------------------------------------------------------------------------------


def _page_name(verb: Command) -> str:
    return "-".join(("sandman", *verb.path))


def _roff_name(name: str) -> str:
    return name.replace("-", "\\-")


def _one_line(text: str) -> str:
    """A NAME line: the description's first sentence, lower-cased and without its full stop."""
    first = text.split(". ", maxsplit=1)[0].rstrip(".")
    return first[:1].lower() + first[1:]


def _text(text: str) -> str:
    """Running text: roff's escapes, `code` in bold, no line taken for a request."""
    escaped = _CODE.sub(lambda m: f"\\fB{m.group(1)}\\fR", _escape(text))
    return f"\\&{escaped}" if escaped.startswith((".", "'")) else escaped


def _escape(text: str) -> str:
    return text.replace("\\", "\\e").replace("-", "\\-")


def _commas(items: list[str]) -> list[str]:
    return [f"{item}," if index < len(items) - 1 else item for index, item in enumerate(items)]


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
