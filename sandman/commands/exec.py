"""`sandman exec NAME -- CMD...`: run CMD inside a running sandbox, as the sandbox's user."""

from __future__ import annotations

import argparse
import os

from sandman.capabilities import PRESETS
from sandman.errors import SandmanError, UsageError
from sandman.kernel import sealed, security
from sandman.kernel.enter import EnterSpec
from sandman.kernel.spawn import DEFAULT_PATH
from sandman.observe import procs
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
    pid, start = int(record.runtime.get("pid", 0)), int(record.runtime.get("start_time", 0))
    if not procs.is_running(pid, start):
        raise SandmanError(f"sandbox {args.name!r} is not running; `sandman apply` starts it again")
    spec = _spec(record.runtime, record.unit, pid, tuple(command), paths.tag)
    from sandman.kernel import terminal

    try:
        return terminal.run(spec, args.tty)
    except OSError as exc:
        raise SandmanError(f"exec into {args.name!r}: {exc}") from exc


def _spec(
    runtime: dict[str, object],
    unit: dict[str, object],
    pid: int,
    command: tuple[str, ...],
    tag: str,
) -> EnterSpec:
    sandbox = unit.get("sandbox") if isinstance(unit.get("sandbox"), dict) else {}
    assert isinstance(sandbox, dict)
    user = str(runtime.get("user") or sandbox.get("user", "0:0"))
    uid, gid = (int(x) for x in user.split(":"))
    env = {
        "PATH": DEFAULT_PATH,
        "HOME": "/root" if uid == 0 else "/",
        "container": "sandman",
        "TERM": os.environ.get("TERM", "dumb"),
    }
    env.update(sandbox.get("environment") or {})
    security_unit = unit.get("security") if isinstance(unit.get("security"), dict) else {}
    assert isinstance(security_unit, dict)
    caps = security_unit.get("capabilities", "default")
    kept = PRESETS[caps] if isinstance(caps, str) else tuple(caps)
    no_new_privileges = bool(security_unit.get("no_new_privileges", True))
    cgroup = runtime.get("cgroup")
    join = None
    if isinstance(cgroup, str):
        from sandman.kernel.cgroup import driver_for
        from sandman.units.names import cgroup_root

        driver = driver_for(cgroup_root(tag))

        def join(child: int) -> None:
            driver.join(cgroup, child)

    before_user, after_user = security.steps(
        str(security_unit.get("seccomp", "default")), kept, no_new_privileges
    )
    return EnterSpec(
        pid=pid,
        command=command,
        environment=env,
        uid=uid,
        gid=gid,
        working_directory=str(sandbox.get("working_directory", "/")),
        join_cgroup=join,
        setup_inside=before_user,
        finish_inside=after_user,
    )
