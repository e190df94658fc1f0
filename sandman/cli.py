"""The command line: argument parsing, dispatch to one verb, and exit codes.

This is the only module that turns exceptions into exit codes. It imports argparse and nothing
heavy: each verb's module (and pydantic or pyroute2 with it) is imported only when that verb runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias, cast

from sandman import __version__

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_CHANGES_PENDING = 3
# The shells `sandman completion` writes for (sandman/completion/ has a module for each).
SHELLS = ("bash", "zsh")

_EPILOG = (
    "Paths: --state-dir, --image-dir and --log-dir (or SANDMAN_STATE_DIR, SANDMAN_IMAGE_DIR, "
    "SANDMAN_LOG_DIR) default to /run/sandman, /var/lib/sandman/images and /var/log/sandman. "
    "Exit codes: 0 success, 1 failure, 2 bad input (a unit or an argument), 3 changes pending "
    "(plan --detailed-exitcode)."
)


class _Formatter(argparse.HelpFormatter):
    """argparse's formatter with the terminal's width found without `shutil`, which argparse
    imports for it (with bz2, lzma and fnmatch: about 4 ms) at every add_argument, so on every
    command; the same sources as shutil.get_terminal_size: COLUMNS, the terminal, 80."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24) -> None:
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2)


def _columns() -> int:
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    stdout = sys.__stdout__
    try:
        return (os.get_terminal_size(stdout.fileno()).columns or 80) if stdout else 80
    except (ValueError, OSError):
        return 80


class _ArgumentParser(argparse.ArgumentParser):
    """Every parser of the command line, with _Formatter."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)


def _path_options() -> argparse.ArgumentParser:
    common = _ArgumentParser(add_help=False)
    group = common.add_argument_group("paths")
    group.add_argument(
        "--state-dir", metavar="DIR", help="records of what was applied (default /run/sandman)"
    )
    group.add_argument(
        "--image-dir", metavar="DIR", help="images (default /var/lib/sandman/images)"
    )
    group.add_argument("--log-dir", metavar="DIR", help="sandbox logs (default /var/log/sandman)")
    return common


def _offers(action: argparse.Action, kind: str) -> None:
    """What a shell completes for this argument (one of cli_spec.KINDS) where its metavar would
    mislead: cli_spec.py reads it, for the completion scripts."""
    vars(action)["offers"] = kind


def _json_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument("--json", action="store_true", help=f"print {what} as JSON for scripts")


def build_parser(exec_remainder: bool = True, only: str | None = None) -> _Parser:
    """The whole command line, or with `only` just that verb's part: every verb's arguments
    cost 4 ms to build (argparse's formatter pulls in shutil and locale), on every command."""
    parser = _Parser(
        prog="sandman",
        description="Keep this host's sandboxes as a directory of unit files declares them.",
        epilog=_EPILOG,
    )
    parser.add_argument("--version", action="version", version=f"sandman {__version__}")
    verbs = cast(
        "_Verbs",
        parser.add_subparsers(
            dest="verb", metavar="VERB", required=True, parser_class=_ArgumentParser
        ),
    )
    parser.verbs = verbs
    paths = _path_options()
    for name, add in VERBS.items():
        if only is None or name == only:
            add(verbs, paths, exec_remainder)
    return parser


class _Parser(_ArgumentParser):
    """The top-level parser, which knows its verbs' parsers: an argument a verb does not know
    is reported with that verb's usage, not the top-level one."""

    verbs: _Verbs | None = None

    def parse_verb(self, argv: list[str]) -> argparse.Namespace:
        args, extras = self.parse_known_args(argv)
        if extras:
            verb = self.verbs.choices.get(args.verb) if self.verbs else None
            (verb or self).error(f"unrecognized arguments: {' '.join(extras)}")
        return args


_Verbs: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _validate_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    del exec_remainder
    validate = verbs.add_parser(
        "validate",
        parents=[paths],
        help="check a unit directory",
        description="Load and check every unit of DIR; report every problem found.",
    )
    validate.add_argument("directory", metavar="DIR", help="the directory of NAME.KIND.toml files")
    _json_option(validate, "the result")
    validate.set_defaults(module="validate")


def _plan_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    del exec_remainder
    plan = verbs.add_parser(
        "plan",
        parents=[paths],
        help="show what apply would change",
        description="Compare DIR with what is applied and print the actions apply would take.",
    )
    plan.add_argument("directory", metavar="DIR", help="the directory of NAME.KIND.toml files")
    _prune_options(plan)
    _target_option(plan)
    plan.add_argument(
        "--detailed-exitcode",
        action="store_true",
        help="exit 0 when nothing is to do, 3 when changes are pending",
    )
    _json_option(plan, "the actions")
    plan.set_defaults(module="plan")


def _schema_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    del paths, exec_remainder
    schema = verbs.add_parser(
        "schema",
        help="print the JSON Schema of a unit kind",
        description="Print the JSON Schema of a unit kind; without KIND, one schema that any "
        "unit file satisfies.",
    )
    schema.add_argument(
        "kind",
        metavar="KIND",
        nargs="?",
        choices=("sandbox", "network", "slice"),
        help="sandbox, network or slice",
    )
    schema.set_defaults(module="schema")


def _daemon_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    del exec_remainder
    daemon = verbs.add_parser(
        "daemon",
        parents=[paths],
        help="keep the host as a unit directory declares, as a service",
        description="Apply DIR at start, then again whenever a unit file changes (inotify), a "
        "sandbox's init exits (restarted as its `restart` says, with backoff), on SIGHUP, and "
        "every --drift-interval seconds to repair drift. Tells systemd when it is ready "
        "(Type=notify) and logs one line per event on stderr with journald priority prefixes. "
        "A bad unit file is logged and changes nothing: what runs keeps running.",
    )
    daemon.add_argument(
        "directory",
        metavar="DIR",
        nargs="?",
        help="the directory of NAME.KIND.toml files (default /etc/sandman/units)",
    )
    daemon.add_argument(
        "--drift-interval",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="seconds between drift checks; 0 turns them off (default 30)",
    )
    daemon.add_argument(
        "--debounce",
        type=float,
        default=200.0,
        metavar="MS",
        help="wait this long after a unit file changes for more changes (default 200)",
    )
    daemon.add_argument(
        "--on-stop",
        choices=("keep", "stop"),
        default="keep",
        help="on SIGTERM: keep the sandboxes running (default), or stop them, destroying every "
        "object the daemon's state dir records",
    )
    daemon.set_defaults(module="daemon")


def _prune_options(parser: argparse.ArgumentParser) -> None:
    prune = parser.add_mutually_exclusive_group()
    prune.add_argument(
        "--prune",
        dest="no_prune",
        action="store_false",
        default=False,  # a store_false action defaults to True: pruning is the default
        help="remove objects whose unit file is gone, and orphans (the default)",
    )
    prune.add_argument(
        "--no-prune",
        dest="no_prune",
        action="store_true",
        help="keep objects whose unit file is gone, and orphans (what a killed apply left)",
    )


def _target_option(parser: argparse.ArgumentParser) -> None:
    target = parser.add_argument(
        "--target",
        metavar="NAME",
        help="only NAME (or KIND/NAME) and the slices and network it uses",
    )
    _offers(target, "object")


def _apply_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    del exec_remainder
    apply = verbs.add_parser(
        "apply",
        parents=[paths],
        help="make the host what a unit directory declares",
        description="Plan DIR against the host, then carry the plan out, action by action, "
        "printing each as it starts and ends (on a terminal, with a [done/total] line). "
        "Objects recorded but no longer declared, and orphans (objects with this instance's "
        "names and no record, such as a killed apply leaves), are removed unless --no-prune. "
        "One apply runs at a time per state dir: another waits for the lock (or, with "
        "--no-wait, fails).",
    )
    apply.add_argument("directory", metavar="DIR", help="the directory of NAME.KIND.toml files")
    _prune_options(apply)
    _target_option(apply)
    apply.add_argument("--no-wait", action="store_true", help="fail at once if another apply runs")
    _json_option(apply, "one event per action")
    apply.set_defaults(module="apply")


def _status_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    del exec_remainder
    status = verbs.add_parser(
        "status",
        parents=[paths],
        help="show sandboxes, their state and use",
        description="Show every applied sandbox (or NAME), its state and resource use.",
    )
    status.add_argument("name", metavar="NAME", nargs="?", help="one sandbox")
    _json_option(status, "the status")
    status.set_defaults(module="status")


def _show_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    del exec_remainder
    show = verbs.add_parser(
        "show",
        parents=[paths],
        help="show one sandbox in full",
        description="Show sandbox NAME in full: its description, command, image, slice and "
        "cgroup, addresses and ports, limits and use, restarts, drift, its processes and the "
        "last lines of its log.",
    )
    show.add_argument("name", metavar="NAME", help="the sandbox")
    show.add_argument(
        "-n",
        "--lines",
        type=int,
        default=10,
        metavar="N",
        help="how many log lines to show (default 10)",
    )
    _json_option(show, "the sandbox")
    show.set_defaults(module="show")


def _destroy_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    del exec_remainder
    destroy = verbs.add_parser(
        "destroy",
        parents=[paths],
        help="take down sandboxes, networks and slices",
        description="Destroy what a unit directory made (DIR), or the named objects: NAME is a "
        "sandbox, KIND/NAME any object (network/lan, slice/services). When that leaves nothing "
        "applied, orphans (objects with this instance's names and no record) go too.",
    )
    destroy.add_argument(
        "targets",
        metavar="DIR|NAME",
        nargs="+",
        help="a unit directory, a sandbox, or KIND/NAME (network/lan, slice/services)",
    )
    destroy.add_argument("--no-wait", action="store_true", help="fail at once if an apply runs")
    destroy.set_defaults(module="destroy")


# What each of `stop`, `start` and `restart` does, for its --help.
_LIFECYCLE = {
    "stop": (
        "stop sandboxes, keeping them applied",
        "Stop the named sandboxes: their stop_signal (SIGTERM) to the init, up to its "
        "stop_timeout, then every process of its cgroup is killed; its cgroup, network (veth, "
        "port forwards) and non-persistent files go. The record stays, marked stopped: apply "
        "and the daemon leave it stopped (a changed unit only updates the record) until "
        "`sandman start`.",
    ),
    "start": (
        "start stopped sandboxes again",
        "Start the named stopped (or exited) sandboxes again from their records: the unit as "
        "last applied, with the same network, address, limits, mounts and id range, and a new "
        "init. A running sandbox is left alone.",
    ),
    "restart": (
        "stop sandboxes, then start them again",
        "Stop the named sandboxes (those that run), then start them again from their records, "
        "each with a new init; as `sandman stop` then `sandman start`, under one lock.",
    ),
}


def _lifecycle_verb(verb: str) -> Callable[[_Verbs, argparse.ArgumentParser, bool], None]:
    def add(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
        del exec_remainder
        summary, description = _LIFECYCLE[verb]
        parser = verbs.add_parser(verb, parents=[paths], help=summary, description=description)
        parser.add_argument("names", metavar="NAME", nargs="+", help="an applied sandbox")
        parser.add_argument("--no-wait", action="store_true", help="fail at once if an apply runs")
        _json_option(parser, "one event per action")
        parser.set_defaults(module="lifecycle")

    return add


def _exec_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    exec_ = verbs.add_parser(
        "exec",
        parents=[paths],
        help="run a command inside a running sandbox",
        description="Run CMD in NAME's namespaces, root and cgroup, as its user, in a session of "
        "its own, and exit with CMD's exit code. Without -t, pipes and sockets on stdin, stdout "
        "and stderr are handed to CMD, a terminal or a file is relayed through a pipe. SIGHUP, "
        "SIGINT, SIGQUIT, SIGTERM, SIGUSR1 and SIGUSR2 to exec are passed on to CMD; CMD is "
        "killed with exec.",
    )
    exec_.add_argument("name", metavar="NAME", help="the sandbox")
    exec_.add_argument(
        "-t",
        "--tty",
        action="store_true",
        help="give CMD a terminal of the sandbox (a pty of its own devpts), relayed to ours",
    )
    # Without `--`, everything after NAME is the command; with it, see _parse.
    nargs = argparse.REMAINDER if exec_remainder else "*"
    exec_.add_argument(
        "command", metavar="-- CMD", nargs=nargs, help="the command and its arguments, after --"
    )
    exec_.set_defaults(module="exec")


def _shell_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    del exec_remainder
    shell = verbs.add_parser(
        "shell",
        parents=[paths],
        help="a login shell in a running sandbox",
        description="Run USER's login shell from the sandbox's /etc/passwd (/bin/sh when it "
        "has none) in a terminal of the sandbox, as `exec -t` runs a command: confined as the "
        "sandbox is, in USER's home, with HOME, USER, LOGNAME and SHELL set. Exits with the "
        "shell's exit code.",
    )
    shell.add_argument("name", metavar="NAME")
    shell.add_argument(
        "user",
        metavar="USER",
        nargs="?",
        help="a name or uid of the sandbox (default: the sandbox's user, sandbox.user)",
    )
    shell.set_defaults(module="shell")


def _top_verb(name: str) -> Callable[[_Verbs, argparse.ArgumentParser, bool], None]:
    """`top`, and `stats` as podman calls it: one verb under two names."""

    def add(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
        del exec_remainder
        top = verbs.add_parser(
            name,
            parents=[paths],
            help="live CPU, memory, tasks and I/O of the running sandboxes"
            + (" (as top)" if name != "top" else ""),
            description="Show every running sandbox's use (or NAME's), read from its cgroup "
            "every --interval seconds: CPU as a share of one CPU over the interval, memory "
            "and tasks against their limits, bytes read and written. On a terminal the table "
            "is redrawn in place; Ctrl-C quits.",
        )
        top.add_argument("names", metavar="NAME", nargs="*", help="only these sandboxes")
        top.add_argument(
            "--interval",
            type=_interval_argument,
            default=2.0,
            metavar="SECONDS",
            help="seconds between readings (default 2)",
        )
        top.add_argument(
            "--once",
            "--no-stream",
            action="store_true",
            help="print one reading, over one interval, and exit",
        )
        _json_option(top, "one object per reading")
        top.set_defaults(module="top")

    return add


def _interval_argument(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0.1 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"{text!r}: give seconds from 0.1 to 3600, e.g. 2")
    return value


def _logs_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    del exec_remainder
    logs = verbs.add_parser(
        "logs",
        parents=[paths],
        help="show a sandbox's output",
        description="Print what NAME's init wrote to stdout and stderr, over its starts: each "
        "start (create, recreate, a restart) writes a file of its own, and the last 5 earlier "
        "ones are kept. No process stamps a sandbox's lines: --timestamps says when each start "
        "began and last wrote, and stamps only lines that arrive while following.",
    )
    logs.add_argument("name", metavar="NAME", help="the sandbox")
    logs.add_argument("-f", "--follow", action="store_true", help="keep printing as it grows")
    logs.add_argument(
        "-n",
        "--tail",
        type=_lines_argument,
        metavar="N",
        help="only the last N lines (over the starts kept); 0: none, with -f only what comes",
    )
    logs.add_argument(
        "--since",
        type=_since_argument,
        metavar="WHEN",
        help="only the starts that wrote at or after WHEN: a duration ago (10min, 2h) or a time "
        "(2026-01-02T10:00:00, local unless it ends in Z or an offset); a start is shown whole",
    )
    logs.add_argument(
        "-t",
        "--timestamps",
        action="store_true",
        help="a line before each start's output with when it began and last wrote; followed "
        "lines with the time they were written",
    )
    _json_option(logs, "one object per line")
    logs.set_defaults(module="logs")


def _console_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    del exec_remainder
    console = verbs.add_parser(
        "console",
        parents=[paths],
        help="attach to a booted sandbox's console",
        description="Attach the terminal to /dev/console of NAME, a sandbox with `boot = true` "
        "(its init's console: boot messages, a getty's login prompt). Press Ctrl-] three times "
        "within a second to detach. With stdin not a terminal, what it reads is typed into the "
        "console, and it detaches once stdin has ended and the console is quiet for a second. "
        "One client at a time; root only.",
    )
    console.add_argument("name", metavar="NAME", help="the booted sandbox")
    console.set_defaults(module="console")


def _lines_argument(text: str) -> int:
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of lines; write e.g. 20")
    return int(text)


def _since_argument(text: str) -> float:
    """Seconds since the epoch, from a duration ago (`10min`) or an ISO 8601 time."""
    import time

    from sandman.units.scalars import parse_duration_ns

    try:
        return time.time() - parse_duration_ns(text) / 1e9
    except ValueError:
        pass
    import datetime

    try:
        return datetime.datetime.fromisoformat(text).timestamp()
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither a duration (10min, 2h) nor a time (2026-01-02T10:00:00)"
        ) from None


def _images_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    """`images` lists; `image busybox|import|remove` change the store (sandman/images/)."""
    del exec_remainder
    listing = verbs.add_parser(
        "images",
        parents=[paths],
        help="list the images",
        description="List the images under the image dir with their size, files and age.",
    )
    _json_option(listing, "the images")
    listing.set_defaults(module="images", action="list")


def _image_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    del exec_remainder
    image = verbs.add_parser(
        "image",
        help="build, import, bootstrap or remove an image",
        description="Build, import, bootstrap or remove an image (a directory IMAGE_DIR/NAME).",
    )
    # The path options sit on each action, not here: argparse would let the action's defaults
    # overwrite what was given before it.
    actions = image.add_subparsers(dest="action", metavar="ACTION", required=True)
    busybox = actions.add_parser(
        "busybox",
        parents=[paths],
        help="build the built-in image from the host's busybox-static",
        description="Build the built-in image: a static busybox with a link per applet and a "
        "minimal /etc (install it with `apt-get install busybox-static`).",
    )
    _offers(
        busybox.add_argument(
            "--name", default="busybox", help="the image's name (default busybox)"
        ),
        "none",
    )
    busybox.add_argument(
        "--busybox", default="/bin/busybox", metavar="PATH", help="the static busybox binary"
    )
    _json_option(busybox, "the image")
    imported = actions.add_parser(
        "import",
        parents=[paths],
        help="make an image from a container image, a tarball or a directory",
        description="Make image NAME from SOURCE: a container image (`podman save` or `docker "
        "save` archive, OCI or docker format, gzip or not, or an OCI image layout directory: "
        "its layers applied in order, whiteouts included, every blob checked against its "
        "digest; its Entrypoint, Cmd, Env, WorkingDir and User kept as the defaults of a "
        "sandbox on it), a tarball (plain, .gz, .xz, .bz2; `docker export` or an Alpine "
        "minirootfs) or a directory, keeping modes and ownership. Replaces an image of that "
        "name only once the new one is complete.",
    )
    _offers(imported.add_argument("name", metavar="NAME", help="the image's name"), "none")
    imported.add_argument(
        "source",
        metavar="SOURCE",
        help="a container image archive or layout, a tarball or a directory",
    )
    imported.add_argument(
        "--ref",
        metavar="REF",
        help="the image to take from an archive or layout holding several (its tag or "
        "reference name, e.g. localhost/web:1.0 or 1.0)",
    )
    imported.add_argument(
        "--max-size",
        metavar="SIZE",
        type=_size_argument,
        default=64 * 1024**3,
        help="refuse a tarball whose files hold more than SIZE bytes (K, M, G, T suffixes; "
        "default 64G); the free space of the image dir bounds it too",
    )
    imported.add_argument(
        "--max-files",
        metavar="N",
        type=_count_argument,
        default=1_000_000,
        help="refuse a tarball of more than N members (default 1000000)",
    )
    _json_option(imported, "the image")
    bootstrap = actions.add_parser(
        "bootstrap",
        parents=[paths],
        help="make a bootable Debian image with mmdebstrap",
        description="Make image NAME, a Debian tree that `[sandbox] boot = true` can boot: "
        "mmdebstrap's minbase variant with systemd as /sbin/init (systemd-sysv), dbus and "
        "the --include packages, from the Debian mirror (mmdebstrap's default, or --mirror), "
        "imported as a tarball is (ownership and file capabilities kept). Needs mmdebstrap "
        "(apt-get install mmdebstrap) and the mirror.",
    )
    _offers(bootstrap.add_argument("name", metavar="NAME", help="the image's name"), "none")
    bootstrap.add_argument(
        "distro", choices=("debian",), metavar="DISTRO", help="the distribution: debian"
    )
    bootstrap.add_argument(
        "--suite", default="bookworm", help="the Debian release (default bookworm)"
    )
    bootstrap.add_argument("--mirror", metavar="URL", help="the Debian mirror to install from")
    bootstrap.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="PKG[,PKG]",
        help="more packages to install (repeatable), e.g. --include nginx,iproute2",
    )
    _json_option(bootstrap, "the image")
    remove = actions.add_parser(
        "remove", parents=[paths], help="remove an image", description="Remove image NAME."
    )
    _offers(remove.add_argument("name", metavar="NAME", help="the image's name"), "image")
    remove.add_argument(
        "--force",
        action="store_true",
        help="remove it even while applied sandboxes run on it (their files go with it)",
    )
    _json_option(remove, "the result")
    for action in (busybox, imported, bootstrap, remove):
        action.set_defaults(module="images")


def _completion_verb(verbs: _Verbs, paths: argparse.ArgumentParser, exec_remainder: bool) -> None:
    del paths, exec_remainder
    completion = verbs.add_parser(
        "completion",
        help="print a shell completion script",
        description="Print the completion script for SHELL, made from this sandman's own command "
        "line: verbs, options, directories and files, and the names of applied sandboxes, "
        "objects and images, asked of sandman as you complete. Load it with `source <(sandman "
        "completion bash)`; contrib/setup.sh installs it where bash-completion and zsh look.",
    )
    completion.add_argument("shell", metavar="SHELL", choices=SHELLS, help="bash or zsh")
    completion.set_defaults(module="completion")


def _size_argument(text: str) -> int:
    from sandman.units.scalars import parse_size

    try:
        size = parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    if size < 1:
        raise argparse.ArgumentTypeError("a size of at least 1 byte, e.g. 100G")
    return size


def _count_argument(text: str) -> int:
    if not (text.isascii() and text.isdigit()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count; write a number, e.g. 2000000")
    return int(text)


VERBS: dict[str, Callable[[_Verbs, argparse.ArgumentParser, bool], None]] = {
    "validate": _validate_verb,
    "plan": _plan_verb,
    "schema": _schema_verb,
    "images": _images_verb,
    "image": _image_verb,
    "apply": _apply_verb,
    "status": _status_verb,
    "show": _show_verb,
    "destroy": _destroy_verb,
    "stop": _lifecycle_verb("stop"),
    "start": _lifecycle_verb("start"),
    "restart": _lifecycle_verb("restart"),
    "exec": _exec_verb,
    "shell": _shell_verb,
    "logs": _logs_verb,
    "console": _console_verb,
    "top": _top_verb("top"),
    "stats": _top_verb("stats"),
    "daemon": _daemon_verb,
    "completion": _completion_verb,
}


def entry() -> None:
    """The `sandman` command: main, then the process leaves without the interpreter's teardown
    (sandman/leave.py). Tests call main, which returns."""
    from sandman.leave import leave

    leave(main())


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse(list(sys.argv[1:] if argv is None else argv))
    from sandman.errors import SandmanError, UnitError, UsageError

    try:
        command = importlib.import_module(f"sandman.commands.{args.module}")
        result: int = command.run(args)
        return result
    except UnitError as exc:
        _report_units(exc, getattr(args, "json", False))
        return EXIT_BAD_INPUT
    except UsageError as exc:
        print(f"sandman: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SandmanError as exc:
        _report(exc, getattr(args, "json", False))
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("sandman: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _quiet_broken_pipe()
    except OSError as exc:
        # The host refused something no sandman error wrapped (a capability missing, a file
        # gone): one line naming what and why, never a traceback.
        _report(_host_error(exc), getattr(args, "json", False))
        return EXIT_FAILED
    except Exception as exc:
        _report(_internal_error(exc), getattr(args, "json", False))
        return EXIT_FAILED


def _parse(argv: list[str]) -> argparse.Namespace:
    """`exec NAME [options] -- CMD...`: everything after the first `--` is the command, so that
    options may follow NAME without being taken for part of the command."""
    if argv[:1] == ["exec"] and "--" in argv:
        split = argv.index("--")
        args = build_parser(exec_remainder=False, only="exec").parse_verb(argv[:split])
        args.command = argv[split + 1 :]
        return args
    only = argv[0] if argv[:1] and argv[0] in VERBS else None
    return build_parser(only=only).parse_verb(argv)


def _report_units(exc: BaseException, as_json: bool) -> None:
    from sandman import output
    from sandman.errors import UnitError

    assert isinstance(exc, UnitError)
    if as_json:
        output.print_json(output.unit_error_json(exc))
    sys.stderr.write(output.unit_error_text(exc))


def _report(exc: BaseException, as_json: bool) -> None:
    from sandman import output

    if as_json:
        output.print_json({"error": {"kind": type(exc).__name__, "message": str(exc)}})
    print(f"sandman: {exc}", file=sys.stderr)


def _host_error(exc: OSError) -> BaseException:
    from sandman.errors import SandmanError

    what = f"`{exc.filename}`: " if exc.filename else ""
    reason = exc.strerror or str(exc)
    hint = ""
    if isinstance(exc, PermissionError):
        hint = "; sandman needs root with every capability (CAP_SYS_ADMIN, CAP_NET_ADMIN...)"
    return SandmanError(f"{what}{reason}{hint}")


def _internal_error(exc: Exception) -> BaseException:
    """A bug of sandman's: one line, and the traceback only when SANDMAN_DEBUG asks for it."""
    import os
    import traceback

    from sandman.errors import SandmanError

    if os.environ.get("SANDMAN_DEBUG"):
        traceback.print_exc()
    return SandmanError(
        f"internal error: {type(exc).__name__}: {exc} (a bug: SANDMAN_DEBUG=1 shows where)"
    )


def _quiet_broken_pipe() -> int:
    """The reader of our output went away (`sandman status | head`): not an error to report.
    stdout is pointed at /dev/null so that the interpreter's final flush does not complain."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_FAILED
