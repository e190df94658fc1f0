"""The runc command line: global options before the verb (`--opt value` and `--opt=value`), then
the verb and its options. Options that clients pass and that change nothing here are accepted
(--no-pivot, --no-new-keyring, --systemd-cgroup, --debug, --criu, --rootless).

Engines call the runtime several times per container, so a command line whose verb is known
builds that verb's parser alone (`parser(verb_of(argv))`): the other fourteen cost a call about
as much as its own work. One without (`--help`, a typo) gets them all, to list them."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from sandman.oci.state import DEFAULT_ROOT

# Global options that take a value (`--root DIR` or `--root=DIR`): what verb_of skips.
_VALUED = ("--root", "--log", "--log-format", "--rootless", "--criu")


def parser(wanted: str | None = None) -> argparse.ArgumentParser:
    """The whole command line, or with `wanted` the global options and that verb alone."""
    top = argparse.ArgumentParser(
        prog="sandman-oci",
        description="An OCI runtime (the runc command line) on sandman's kernel layer.",
    )
    _global_options(top)
    verbs = top.add_subparsers(dest="verb", metavar="VERB")
    for name, (text, options) in VERBS.items():
        if wanted in (None, name):
            options(verbs.add_parser(name, help=text, description=text))
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


def _global_options(top: argparse.ArgumentParser) -> None:
    top.add_argument(
        "--root", default=DEFAULT_ROOT, help=f"state directory (default {DEFAULT_ROOT})"
    )
    top.add_argument("--log", help="write errors to this file as well")
    top.add_argument("--log-format", default="text", choices=("text", "json"))
    top.add_argument(
        "--systemd-cgroup", action="store_true", help="accepted; cgroups are made directly"
    )
    top.add_argument("--debug", action="store_true", help="accepted")
    top.add_argument("--rootless", default=None, help="accepted; sandman-oci runs as root")
    top.add_argument("--criu", default=None, help="accepted; checkpointing is not supported")
    top.add_argument("--version", "-v", action="store_true", help="print the version and exit")


def _create_options(sub: argparse.ArgumentParser, run: bool = False) -> None:
    sub.add_argument("--bundle", "-b", default=".", help="the bundle directory (default .)")
    sub.add_argument("--pid-file", help="write the init's PID here")
    sub.add_argument("--console-socket", help="AF_UNIX socket to send the pty master to")
    sub.add_argument("--no-pivot", action="store_true", help="accepted")
    sub.add_argument("--no-new-keyring", action="store_true", help="accepted")
    sub.add_argument("--preserve-fds", type=int, default=0, help="accepted; must be 0")
    if run:
        sub.add_argument("--detach", "-d", action="store_true", help="return once started")
    sub.add_argument("id")


def _id_only(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("id")


def _kill_options(kill: argparse.ArgumentParser) -> None:
    kill.add_argument("--all", "-a", action="store_true", help="every process of the container")
    kill.add_argument("id")
    kill.add_argument("signal", nargs="?", default="SIGTERM", help="number or name (default TERM)")


def _delete_options(delete: argparse.ArgumentParser) -> None:
    delete.add_argument(
        "--force", "-f", action="store_true", help="kill it first; a missing id is fine"
    )
    delete.add_argument("id")


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
    "create": ("make a container from a bundle, stopped before its process runs", _create_options),
    "run": (
        "create and start a container, and wait for it unless --detach",
        lambda sub: _create_options(sub, run=True),
    ),
    "start": ("run the process of a created container", _id_only),
    "state": ("print a container's state as JSON", _id_only),
    "kill": ("send a signal to the container's init (or all its processes)", _kill_options),
    "delete": ("remove a stopped container (any, with --force)", _delete_options),
    "exec": ("run a process in a running container", _exec_options),
    "ps": ("list the container's processes", _ps_options),
    "pause": ("freeze every process of the container", _id_only),
    "resume": ("thaw a paused container", _id_only),
    "update": ("change a running container's memory, pids and CPU limits", _update_options),
    "features": ("print what this runtime supports as JSON", _no_options),
    "list": ("list the containers (ids and status)", _no_options),
}
