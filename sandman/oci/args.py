"""The runc command line: global options before the verb (`--opt value` and `--opt=value`), then
the verb and its options. Options that clients pass and that change nothing here are accepted
(--no-pivot, --no-new-keyring, --systemd-cgroup, --debug, --criu, --rootless).

Engines call the runtime several times per container, so a command line whose verb is known
builds that verb's parser alone (`parser(verb_of(argv))`): the other fourteen cost a call about
as much as its own work. One without (`--help`, a typo) gets them all, to list them."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from sandman.oci import options as table

# Global options that take a value (`--root DIR` or `--root=DIR`): what verb_of skips.
_VALUED = tuple(o.flags[0] for o in table.GLOBAL if o.kind != "flag")


class _Formatter(argparse.HelpFormatter):
    """argparse's, with the width found as shutil.get_terminal_size finds it ($COLUMNS, then
    standard output's terminal, else 80): argparse imports shutil (with bz2 and lzma) for that at
    every parser it builds, help asked for or not."""

    def __init__(self, prog: str) -> None:
        import os

        columns = os.environ.get("COLUMNS", "")
        width = int(columns) if columns.isdigit() and int(columns) > 0 else 0
        if not width:
            try:
                width = os.get_terminal_size(1).columns
            except OSError:
                width = 80
        super().__init__(prog, width=width - 2)


def parser(wanted: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with `wanted` the global options and that verb alone."""
    top = argparse.ArgumentParser(
        prog="sandman-oci",
        description="An OCI runtime (the runc command line) on sandman's kernel layer.",
        formatter_class=_Formatter,
    )
    _add(top, table.GLOBAL)
    verbs = top.add_subparsers(dest="verb", metavar="VERB")
    for name, (text, options) in VERBS.items():
        if wanted in (None, name):
            sub = verbs.add_parser(name, help=text, description=text, formatter_class=_Formatter)
            options(sub)
    return top


def verb_of(argv: Sequence[str]) -> str | None:
    """The verb of a command line whose words before it are all global options; else None."""
    words = iter(argv)
    for word in words:
        if word in _VALUED:
            next(words, None)
        elif not word.startswith("-"):
            return word if word in VERBS else None
    return None


def _add(
    sub: argparse.ArgumentParser,
    options: tuple[table.Option, ...],
    positionals: tuple[table.Positional, ...] = (),
) -> None:
    for option in options:
        if option.kind == "flag":
            sub.add_argument(
                *option.flags, dest=option.dest, action="store_true", help=option.help or None
            )
            continue
        kind = int if option.kind == "int" else str
        sub.add_argument(
            *option.flags,
            dest=option.dest,
            type=kind,
            default=option.default,
            choices=option.choices,
            help=option.help or None,
        )
    for positional in positionals:
        if positional.default is None:
            sub.add_argument(positional.dest, help=positional.help)
        else:
            sub.add_argument(
                positional.dest, nargs="?", default=positional.default, help=positional.help
            )


def _simple(verb: str) -> Callable[[argparse.ArgumentParser], None]:
    options, positionals = table.SIMPLE_VERBS[verb]
    return lambda sub: _add(sub, options, positionals)


def _run_options(sub: argparse.ArgumentParser) -> None:
    options, positionals = table.SIMPLE_VERBS["create"]
    _add(sub, (*options, table.DETACH), positionals)


def _id_only(sub: argparse.ArgumentParser) -> None:
    _add(sub, (), (table.ID,))


def _exec_options(exec_: argparse.ArgumentParser) -> None:
    exec_.add_argument("--process", "-p", help="an OCI process JSON file")
    exec_.add_argument("--console-socket", help="AF_UNIX socket to send the pty master to")
    exec_.add_argument("--detach", "-d", action="store_true", help="do not wait for the process")
    exec_.add_argument("--tty", "-t", action="store_true", help="allocate a pty")
    exec_.add_argument("--pid-file", help="write the process's PID here")
    exec_.add_argument("--cwd", help="working directory (without --process)")
    exec_.add_argument(
        "--env", "-e", action="append", default=[], help="NAME=VALUE (without --process)"
    )
    exec_.add_argument("--preserve-fds", type=int, default=0, help="accepted; must be 0")
    exec_.add_argument("id")
    exec_.add_argument("command", nargs=argparse.REMAINDER, help="without --process")


def _ps_options(ps: argparse.ArgumentParser) -> None:
    ps.add_argument("--format", "-f", default="table", choices=("table", "json"))
    ps.add_argument("id")


def _update_options(update: argparse.ArgumentParser) -> None:
    """runc's `update` flags beside --resources: each sets one value and wins over the file."""
    update.add_argument(
        "--resources", "-r", help="a LinuxResources JSON file, or - for the standard input"
    )
    update.add_argument("--memory", "-m", type=int, help="memory limit in bytes (-1: none)")
    update.add_argument("--pids-limit", type=int, help="most tasks (-1: none)")
    update.add_argument("--cpu-shares", type=int, help="CPU shares (v2: cpu.weight, as runc)")
    update.add_argument("--cpu-quota", type=int, help="CFS quota in microseconds (-1: none)")
    update.add_argument("--cpu-period", type=int, help="CFS period in microseconds")
    update.add_argument("--cpuset-cpus", help="the CPUs it may run on, e.g. 0-1,3")
    update.add_argument("--cpuset-mems", help="the memory nodes it may use")
    update.add_argument("id")


def _no_options(sub: argparse.ArgumentParser) -> None:
    del sub


Options = Callable[[argparse.ArgumentParser], None]
VERBS: dict[str, tuple[str, Options]] = {
    "create": (
        "make a container from a bundle, stopped before its process runs",
        _simple("create"),
    ),
    "run": ("create and start a container, and wait for it unless --detach", _run_options),
    "start": ("run the process of a created container", _simple("start")),
    "state": ("print a container's state as JSON", _simple("state")),
    "kill": ("send a signal to the container's init (or all its processes)", _simple("kill")),
    "delete": ("remove a stopped container (any, with --force)", _simple("delete")),
    "exec": ("run a process in a running container", _exec_options),
    "ps": ("list the container's processes", _ps_options),
    "pause": ("freeze every process of the container", _id_only),
    "resume": ("thaw a paused container", _id_only),
    "update": ("change a running container's memory, pids and CPU limits", _update_options),
    "features": ("print what this runtime supports as JSON", _no_options),
    "list": ("list the containers (ids and status)", _no_options),
}
