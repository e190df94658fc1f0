"""`sandman exec NAME -- CMD...`: run CMD inside a running sandbox, as the sandbox's user."""

from __future__ import annotations

import argparse
import os

from sandman.apply.confinement import confinement_of
from sandman.errors import SandmanError, UsageError
from sandman.kernel import sealed
from sandman.kernel.enter import EnterSpec
from sandman.observe import procs
from sandman.observe.facts import Record
from sandman.observe.records import read_records
from sandman.paths import Paths


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise UsageError("exec joins a sandbox's namespaces: run it as root")
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise UsageError("give the command to run: sandman exec NAME -- CMD...")
    try:
        sealed.run_sealed()  # returns in the sealed copy; see kernel/sealed.py
    except OSError as exc:
        raise SandmanError(f"exec: cannot run from a sealed interpreter copy: {exc}") from exc
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    record = next(
        (r for r in read_records(paths.state_dir) if r.kind == "sandbox" and r.name == args.name),
        None,
    )
    if record is None:
        raise UsageError(f"no sandbox {args.name!r} is applied in `{paths.state_dir}`")
    if not procs.is_running(record.runtime.pid, record.runtime.start_time):
        raise SandmanError(f"sandbox {args.name!r} is not running; `sandman apply` starts it again")
    spec = _spec(record, tuple(command), paths.tag)
    from sandman.kernel import terminal

    try:
        return terminal.run(spec, args.tty)
    except OSError as exc:
        raise SandmanError(f"exec into {args.name!r}: {exc}") from exc


def _spec(record: Record, command: tuple[str, ...], tag: str) -> EnterSpec:
    """What the command takes: the init's confinement (its user and environment as it took
    them), its cgroup."""
    runtime = record.runtime
    cgroup = runtime.cgroup
    join = None
    if cgroup is not None:
        from sandman.kernel.cgroup import driver_for
        from sandman.units.names import cgroup_root

        driver = driver_for(cgroup_root(tag))

        def join(child: int) -> None:
            driver.join(cgroup, child)

    return EnterSpec(
        pid=runtime.pid,
        command=command,
        confinement=confinement_of(
            record.sandbox, runtime.user, runtime.environment if runtime.user else None
        ),
        term=os.environ.get("TERM", "dumb"),
        join_cgroup=join,
    )
