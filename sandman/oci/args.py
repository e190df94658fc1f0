"""The runc command line: global options before the verb (`--opt value` and `--opt=value`), then
the verb and its options. Options that clients pass and that change nothing here are accepted
(--no-pivot, --no-new-keyring, --systemd-cgroup, --debug, --criu, --rootless)."""

from __future__ import annotations

import argparse

from sandman.oci.state import DEFAULT_ROOT


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="sandman-oci",
        description="An OCI runtime (the runc command line) on sandman's kernel layer.",
    )
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
    verbs = top.add_subparsers(dest="verb", metavar="VERB")

    def verb(name: str, text: str) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=text, description=text)
        return sub

    for name, text in (
        ("create", "make a container from a bundle, stopped before its process runs"),
        ("run", "create and start a container, and wait for it unless --detach"),
    ):
        sub = verb(name, text)
        sub.add_argument("--bundle", "-b", default=".", help="the bundle directory (default .)")
        sub.add_argument("--pid-file", help="write the init's PID here")
        sub.add_argument("--console-socket", help="AF_UNIX socket to send the pty master to")
        sub.add_argument("--no-pivot", action="store_true", help="accepted")
        sub.add_argument("--no-new-keyring", action="store_true", help="accepted")
        sub.add_argument("--preserve-fds", type=int, default=0, help="accepted; must be 0")
        if name == "run":
            sub.add_argument("--detach", "-d", action="store_true", help="return once started")
        sub.add_argument("id")
    verb("start", "run the process of a created container").add_argument("id")
    verb("state", "print a container's state as JSON").add_argument("id")
    kill = verb("kill", "send a signal to the container's init (or all its processes)")
    kill.add_argument("--all", "-a", action="store_true", help="every process of the container")
    kill.add_argument("id")
    kill.add_argument("signal", nargs="?", default="SIGTERM", help="number or name (default TERM)")
    delete = verb("delete", "remove a stopped container (any, with --force)")
    delete.add_argument(
        "--force", "-f", action="store_true", help="kill it first; a missing id is fine"
    )
    delete.add_argument("id")
    exec_ = verb("exec", "run a process in a running container")
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
    ps = verb("ps", "list the container's processes")
    ps.add_argument("--format", "-f", default="table", choices=("table", "json"))
    ps.add_argument("id")
    verb("pause", "freeze every process of the container").add_argument("id")
    verb("resume", "thaw a paused container").add_argument("id")
    _update_options(verb("update", "change a running container's memory, pids and CPU limits"))
    verb("features", "print what this runtime supports as JSON")
    verb("list", "list the containers (ids and status)")
    return top


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
