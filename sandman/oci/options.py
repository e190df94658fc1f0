"""The global options and the options of the verbs an engine calls for every container (create,
start, state, kill, delete), as data: args.py builds argparse's parser from it, fast_args.py reads
the usual command lines with it, without argparse. One table, so the two cannot disagree on a
name, a default or what takes a value."""

from __future__ import annotations

from typing import NamedTuple

from sandman.oci.state import DEFAULT_ROOT


class Option(NamedTuple):
    flags: tuple[str, ...]  # the long name first, then a short one
    dest: str
    kind: str  # "flag" (store_true), "text" or "int": what its value is
    default: object
    help: str
    choices: tuple[str, ...] | None = None


class Positional(NamedTuple):
    dest: str
    default: str | None = None  # None: required
    help: str | None = None


GLOBAL = (
    Option(("--root",), "root", "text", DEFAULT_ROOT, f"state directory (default {DEFAULT_ROOT})"),
    Option(("--log",), "log", "text", None, "write errors to this file as well"),
    Option(("--log-format",), "log_format", "text", "text", "", ("text", "json")),
    Option(
        ("--systemd-cgroup",),
        "systemd_cgroup",
        "flag",
        False,
        "accepted; cgroups are made directly",
    ),
    Option(("--debug",), "debug", "flag", False, "accepted"),
    Option(("--rootless",), "rootless", "text", None, "accepted; sandman-oci runs as root"),
    Option(("--criu",), "criu", "text", None, "accepted; checkpointing is not supported"),
    Option(("--version", "-v"), "version", "flag", False, "print the version and exit"),
)

CREATE = (
    Option(("--bundle", "-b"), "bundle", "text", ".", "the bundle directory (default .)"),
    Option(("--pid-file",), "pid_file", "text", None, "write the init's PID here"),
    Option(
        ("--console-socket",),
        "console_socket",
        "text",
        None,
        "AF_UNIX socket to send the pty master to",
    ),
    Option(("--no-pivot",), "no_pivot", "flag", False, "accepted"),
    Option(("--no-new-keyring",), "no_new_keyring", "flag", False, "accepted"),
    Option(("--preserve-fds",), "preserve_fds", "int", 0, "accepted; must be 0"),
)
DETACH = Option(("--detach", "-d"), "detach", "flag", False, "return once started")
KILL_ALL = Option(("--all", "-a"), "all", "flag", False, "every process of the container")
FORCE = Option(("--force", "-f"), "force", "flag", False, "kill it first; a missing id is fine")

ID = Positional("id")
SIGNAL = Positional("signal", "SIGTERM", "number or name (default TERM)")

# The verbs fast_args.py reads: (options, positionals in order).
SIMPLE_VERBS: dict[str, tuple[tuple[Option, ...], tuple[Positional, ...]]] = {
    "create": (CREATE, (ID,)),
    "start": ((), (ID,)),
    "state": ((), (ID,)),
    "kill": ((KILL_ALL,), (ID, SIGNAL)),
    "delete": ((FORCE,), (ID,)),
}
