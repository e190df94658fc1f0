"""`sandman exec NAME -- CMD...`: run CMD inside a running sandbox, as the sandbox's user.

`enter` is the one way into a sandbox: `shell` goes through it too, choosing its command and
identity from what it reads of the running sandbox."""

from __future__ import annotations

import argparse
import dataclasses
import os
from collections.abc import Callable

from sandman.apply.confinement import confinement_of
from sandman.errors import SandmanError, UsageError
from sandman.kernel import sealed
from sandman.kernel.enter import EnterSpec
from sandman.observe import procs
from sandman.observe.facts import Record
from sandman.observe.records import read_records
from sandman.paths import Paths

# What runs, given the running sandbox's record and the spec exec would use: the spec to run.
Choose = Callable[[Record, EnterSpec], EnterSpec]


def run(args: argparse.Namespace) -> int:
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("give the command to run: sandman exec NAME -- CMD...")
    return enter(
        args, lambda _record, spec: dataclasses.replace(spec, command=tuple(command)), args.tty
    )


def enter(args: argparse.Namespace, choose: Choose, tty: bool) -> int:
    """Run what `choose` makes of the sandbox NAME's spec, from a sealed interpreter, with a
    terminal of the sandbox when `tty`; the command's exit code."""
    if os.geteuid() != 0:
        raise UsageError(f"{args.verb} joins a sandbox's namespaces: run it as root")
    try:
        sealed.run_sealed()  # returns in the sealed copy; see kernel/sealed.py
    except OSError as exc:
        raise SandmanError(
            f"{args.verb}: cannot run from a sealed interpreter copy: {exc}"
        ) from exc
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    record = next(
        (r for r in read_records(paths.state_dir) if r.kind == "sandbox" and r.name == args.name),
        None,
    )
    if record is None:
        raise UsageError(f"no sandbox {args.name!r} is applied in `{paths.state_dir}`")
    if record.stopped:
        raise SandmanError(
            f"sandbox {args.name!r} is stopped; `sandman start {args.name}` starts it"
        )
    if not procs.is_running(record.runtime.pid, record.runtime.start_time):
        raise SandmanError(
            f"sandbox {args.name!r} is not running (its init exited); "
            f"`sandman start {args.name}` starts it again"
        )
    spec = choose(record, _spec(record, paths.tag))
    from sandman.kernel import terminal

    try:
        return terminal.run(spec, tty)
    except OSError as exc:
        raise SandmanError(f"{args.verb} into {args.name!r}: {exc}") from exc


def _spec(record: Record, tag: str) -> EnterSpec:
    """What a command takes: the init's confinement (its user and environment as it took
    them), its cgroup; no command yet."""
    runtime = record.runtime
    cgroup = runtime.cgroup
    join = None
    if cgroup is not None:
        from sandman.kernel.cgroup import driver_for
        from sandman.placement import cgroup_base

        driver = driver_for(cgroup_base(tag))

        def join(child: int) -> None:
            driver.join_entering(cgroup, child)

    return EnterSpec(
        pid=runtime.pid,
        command=(),
        confinement=confinement_of(
            record.sandbox, runtime.user, runtime.environment if runtime.user else None
        ),
        term=os.environ.get("TERM", "dumb"),
        join_cgroup=join,
    )
