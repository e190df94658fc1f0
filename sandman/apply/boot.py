"""What apply adds to a sandbox that boots its image's init (`[sandbox] boot = true`), as
systemd-nspawn -b does: the init to run, found in the root; /run, /run/lock and /tmp as tmpfs;
and the files the init finds once in its root (kernel/boot_files.py). Its environment
(`container`, `container_uuid`) comes with every process's, from apply/confinement.py.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from sandman import booting
from sandman.apply.context import ApplyContext
from sandman.errors import ApplyError
from sandman.kernel import boot_files
from sandman.kernel.rootfs import Mount
from sandman.kernel.spawn import SpawnError
from sandman.observe.preflight import boot_init
from sandman.units.desired import DesiredSandbox

if TYPE_CHECKING:
    from sandman.kernel.console import Keeper

KEY = "sandbox.boot"


def command(ctx: ApplyContext, sandbox: DesiredSandbox) -> tuple[str, ...]:
    """The unit's command, or for a booted sandbox the image's init, resolved in its root."""
    if sandbox.unit.sandbox.command is not None:
        return sandbox.unit.sandbox.command
    init = boot_init(ctx.paths, sandbox)
    if init is None:
        raise ApplyError(
            f"sandbox/{sandbox.name}",
            f"{sandbox.file}: {KEY}: the root has no init: none of "
            f"{', '.join(booting.INIT_PATHS)} is an executable file in it",
        )
    return (init,)


def mounts(sandbox: DesiredSandbox) -> Iterator[Mount]:
    """The tmpfs a booted init expects fresh at each start; a mount the unit declares on one of
    these targets is the unit's choice, and replaces it."""
    if not sandbox.unit.sandbox.boot:
        return
    declared = {mount.target for mount in sandbox.unit.mount}
    for target, mode, size in booting.TMPFS:
        if target not in declared:
            yield Mount("tmpfs", target, size=size, mode=mode, key=KEY)


def inside_root(sandbox: DesiredSandbox) -> Callable[[], None] | None:
    """What the init-to-be writes in its root before it execs a booted init."""
    if sandbox.machine_id is None:
        return None
    return functools.partial(_write_files, sandbox.machine_id)


def _write_files(machine_id: str) -> None:
    try:
        boot_files.write(booting.CONTAINER_MANAGER, machine_id)
    except OSError as exc:
        message = f"cannot write the files a booted init reads: {exc.strerror}"
        raise SpawnError(KEY, message, exc.errno or 0, exc.filename) from exc


def start_console(ctx: ApplyContext, sandbox: DesiredSandbox, runtime: str) -> Keeper | None:
    """For a booted sandbox, its console keeper (kernel/console.py), started before the init:
    it takes the log file of this start, which the console's output goes to."""
    if not sandbox.unit.sandbox.boot:
        return None
    from sandman.kernel import console, loginstances

    path = os.path.join(ctx.paths.log_dir, f"{sandbox.name}.log")
    log = loginstances.start_instance(path, sandbox.name)
    try:
        return console.start_keeper(runtime, log)
    except OSError as exc:
        message = f"cannot start the console keeper: {exc.strerror or exc}"
        raise SpawnError(KEY, message, exc.errno or 0) from exc
    finally:
        os.close(log)
