"""Sandboxes on the host: create, destroy and repair, each leaving nothing half-made.

A create runs its steps with an undo stack: if a step fails, what the earlier ones made (the
runtime dir, the cgroup, the init) is taken down again in reverse order before the error rises.
"""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Callable, Generator, Iterator

from sandman.apply import boot, faults, ids, name_files, networks
from sandman.apply.confinement import confinement_of
from sandman.apply.context import ApplyContext
from sandman.apply.init_end import InitEnd
from sandman.apply.limits import cgroup_limits
from sandman.errors import ApplyError
from sandman.kernel import syscalls as sc
from sandman.kernel.cgroup_common import LimitError
from sandman.kernel.console import Keeper
from sandman.kernel.rootfs import DEV_RULES, Mount, RootfsPlan
from sandman.kernel.spawn import IdMapping, SpawnError, SpawnSpec, Started
from sandman.kernel.spawn import abandon as spawn_abandon
from sandman.kernel.spawn import finish as spawn_finish
from sandman.kernel.spawn import start as spawn_start
from sandman.observe import procs
from sandman.observe.facts import IdRanges, Record, Runtime
from sandman.observe.records import record_of, remove_record, sandbox_declared, write_record
from sandman.record import record
from sandman.units.desired import DesiredSandbox

# The nodes of the sandbox's /dev (null, zero, full, random, urandom, tty, ptmx) and its ptys.
ALLOWED_DEVICES = DEV_RULES
DEFAULT_SPAWN_TIMEOUT = 60.0
_FLAGS = {
    "pid": sc.CLONE_NEWPID,
    "uts": sc.CLONE_NEWUTS,
    "ipc": sc.CLONE_NEWIPC,
    "net": sc.CLONE_NEWNET,
    "cgroup": sc.CLONE_NEWCGROUP,
    "time": sc.CLONE_NEWTIME,
}


class Undo:
    def __init__(self) -> None:
        self.steps: list[Callable[[], None]] = []

    def push(self, step: Callable[[], None]) -> None:
        self.steps.append(step)

    def run(self) -> list[BaseException]:
        errors: list[BaseException] = []
        for step in reversed(self.steps):
            try:
                step()
            except Exception as exc:
                errors.append(exc)
        self.steps.clear()
        return errors


@contextlib.contextmanager
def unit_key(sandbox: DesiredSandbox, key: str, step: str) -> Iterator[None]:
    """Errors of a step name the sandbox, its unit file and the key the step serves."""
    try:
        yield
    except ApplyError:
        raise
    except SpawnError as exc:
        raise ApplyError(
            f"sandbox/{sandbox.name}", f"{sandbox.file}: {exc.key or key}: {step}", exc
        ) from exc
    except LimitError as exc:
        where = f"{sandbox.file}: resources.{exc.key}"
        raise ApplyError(f"sandbox/{sandbox.name}", f"{where}: {step}", exc) from exc
    except OSError as exc:
        raise ApplyError(f"sandbox/{sandbox.name}", f"{sandbox.file}: {key}: {step}", exc) from exc


def create(ctx: ApplyContext, sandbox: DesiredSandbox) -> Record:
    stages = create_stages(ctx, sandbox)
    next(stages)
    return finish_stages(stages)


def finish_stages(stages: Generator[None, None, Record]) -> Record:
    try:
        next(stages)
    except StopIteration as done:
        record: Record = done.value
        return record
    raise AssertionError("a create has two stages")


def create_stages(ctx: ApplyContext, sandbox: DesiredSandbox) -> Generator[None, None, Record]:
    """A create in two stages, so that the applier can start several sandboxes before it waits
    for any: up to the fork of the first child, then (after the yield) the rest. If a stage
    fails, or the generator is closed between them, what was made is undone."""
    undo = Undo()
    try:
        started = _start(ctx, sandbox, undo)
        yield
        return _finish(ctx, sandbox, undo, started)
    except BaseException:
        problems = undo.run()
        for problem in problems:
            ctx.progress.note(f"while undoing sandbox/{sandbox.name}: {problem}")
        raise


def _start(ctx: ApplyContext, sandbox: DesiredSandbox, undo: Undo) -> _Started:
    source = _rootfs_source(ctx, sandbox)
    _check_mount_sources(sandbox)
    idmap = _idmap(ctx, sandbox)
    runtime = ctx.runtime_dir(sandbox.name)
    with unit_key(sandbox, "rootfs", f"making `{runtime}`"):
        plan = _rootfs_plan(ctx, sandbox, source, idmap, runtime)
        if sandbox.unit.rootfs.persistent and idmap and ids.declared_ranges(sandbox) is None:
            ids.pin(ctx.persistent_dir(sandbox.name), idmap.uid[0][1])
    undo.push(lambda: _remove_tree(runtime))
    faults.step(f"sandbox/{sandbox.name}: runtime dir made")
    cgroup = ctx.cgroups.path(sandbox.slice_path, sandbox.name)
    with unit_key(sandbox, "resources", f"making cgroup `{cgroup}`"):
        for warning in ctx.make_cgroup(cgroup):
            ctx.progress.note(warning)
        undo.push(lambda: _remove_cgroup(ctx, cgroup))
        faults.step(f"sandbox/{sandbox.name}: cgroup made")
        for warning in ctx.cgroups.set_limits(cgroup, cgroup_limits(sandbox.unit.resources)):
            ctx.progress.note(f"sandbox/{sandbox.name}: {warning}")
        for warning in ctx.cgroups.restrict_devices(cgroup, ALLOWED_DEVICES):
            ctx.progress.note(f"sandbox/{sandbox.name}: {warning}")
        if sandbox.unit.sandbox.boot:
            for warning in ctx.cgroups.delegate(cgroup, *plan.owner):
                ctx.progress.note(f"sandbox/{sandbox.name}: {warning}")
        faults.step(f"sandbox/{sandbox.name}: limits written")
    _private(sandbox, ctx.paths.log_dir, "log dir (--log-dir)")
    with unit_key(sandbox, boot.KEY, "starting the console keeper"):
        keeper = boot.start_console(ctx, sandbox, runtime)
    if keeper is not None:
        undo.push(keeper.stop)
    spec = _spawn_spec(ctx, sandbox, plan, idmap, cgroup, keeper=keeper)
    if sandbox.unit.network is not None:
        undo.push(lambda: networks.detach_sandbox(ctx, sandbox.name))
    with unit_key(sandbox, "sandbox.command", "starting the init"):
        started = spawn_start(spec)
    if keeper is not None:
        keeper.release_init_end()  # the first child has its copy
    pending = [started]  # finish() takes it over; until then, abandon it on a failure

    def abandon() -> None:
        if pending:
            spawn_abandon(pending.pop())

    undo.push(abandon)
    return _Started(started, pending, plan, idmap, cgroup, runtime, keeper)


@record
class _Started:
    """A create between its two stages: the forked spawn and what the record needs."""

    spawn: Started
    pending: list[Started]
    plan: RootfsPlan
    idmap: IdMapping | None
    cgroup: str
    runtime: str
    keeper: Keeper | None = None


def _finish(ctx: ApplyContext, sandbox: DesiredSandbox, undo: Undo, started: _Started) -> Record:
    with unit_key(sandbox, "sandbox.command", "starting the init"):
        pid = spawn_finish(started.pending.pop())
    undo.push(lambda: _kill(pid))
    if started.keeper is not None:
        started.keeper.tell_init(pid)
    faults.step(f"sandbox/{sandbox.name}: init started")
    record = _record(
        ctx,
        sandbox,
        pid=pid,
        cgroup=started.cgroup,
        idmap=started.idmap,
        runtime=started.runtime,
        plan=started.plan,
        keeper=started.keeper.pid if started.keeper is not None else 0,
    )
    write_record(ctx.paths.state_dir, record)
    ctx.records[record.key] = record
    return record


def _rootfs_source(ctx: ApplyContext, sandbox: DesiredSandbox) -> str:
    rootfs = sandbox.unit.rootfs
    if rootfs.path is not None:
        key, source, hint = "rootfs.path", rootfs.path, "create it or point rootfs.path elsewhere"
    else:
        assert rootfs.image is not None
        key, source = "rootfs.image", os.path.join(ctx.paths.image_dir, rootfs.image)
        hint = (
            "build it with `sandman image busybox`"
            if rootfs.image == "busybox"
            else (f"import it with `sandman image import {rootfs.image} TARBALL`")
        )
    if not os.path.isdir(source):
        raise ApplyError(
            f"sandbox/{sandbox.name}",
            f"{sandbox.file}: {key}: `{source}` is not a directory; {hint}",
        )
    return source


def _check_mount_sources(sandbox: DesiredSandbox) -> None:
    from sandman.units.plain import BindMount, OverlayMount  # only where units are

    for index, mount in enumerate(sandbox.unit.mount):
        paths = [mount.source] if isinstance(mount, BindMount) else []
        if isinstance(mount, OverlayMount):
            paths = [*mount.lower, *([mount.upper] if mount.upper else [])]
        for path in paths:
            if not os.path.exists(path):
                key = "source" if isinstance(mount, BindMount) else "lower"
                raise ApplyError(
                    f"sandbox/{sandbox.name}",
                    f"{sandbox.file}: mount[{index}].{key}: `{path}` does not exist; "
                    "create it on the host or fix the path",
                )


def _idmap(ctx: ApplyContext, sandbox: DesiredSandbox) -> IdMapping | None:
    if not sandbox.unit.namespaces.user:
        return None
    declared = ids.declared_ranges(sandbox)
    if declared is not None:
        return IdMapping(*declared)
    start = _kept_range(ctx, sandbox)
    if start is None:
        start = ids.allocate(_spans_above_handed_out(ctx, sandbox), lowest=ctx.lowest_auto_ids)
        ctx.lowest_auto_ids = start + ids.AUTO_SIZE
    else:
        ctx.kept_ids.append((start, ids.AUTO_SIZE))
    ctx.reserved_ids.append((start, ids.AUTO_SIZE))
    whole = ((0, start, ids.AUTO_SIZE),)
    return IdMapping(whole, whole)


def _kept_range(ctx: ApplyContext, sandbox: DesiredSandbox) -> int | None:
    """The automatic range the sandbox had: its record's, or for a persistent one the range
    pinned beside its data (its files belong to those ids, whatever came and went between),
    unless another sandbox holds it now."""
    previous = ctx.records.get(("sandbox", sandbox.name))
    kept = previous.runtime.auto_ids if previous else None
    if kept is not None:
        return kept
    if not sandbox.unit.rootfs.persistent:
        return None
    pinned = ids.read_pinned(ctx.persistent_dir(sandbox.name))
    if pinned is None:
        return None
    if any(s < pinned + ids.AUTO_SIZE and pinned < s + n for s, n in _taken_ids(ctx, sandbox.name)):
        ctx.progress.note(
            f"sandbox/{sandbox.name}: its pinned id range {pinned} is taken by another sandbox; "
            "it gets a new one, and files of its persistent data may be unreadable inside"
        )
        return None
    return pinned


def _taken_ids(ctx: ApplyContext, name: str) -> list[tuple[int, int]]:
    """Every host id range in use, or pinned by persistent data, but sandbox `name`'s own."""
    persistent_root = os.path.dirname(ctx.persistent_dir(name))
    return ctx.reserved_ids + ids.pinned_ranges(persistent_root, name) + _known_ids(ctx)


def _spans_above_handed_out(ctx: ApplyContext, sandbox: DesiredSandbox) -> list[tuple[int, int]]:
    """What a new automatic range must not overlap, from ctx.lowest_auto_ids up: the ranges
    declared, observed and pinned (gathered once per apply) and those kept by the sandboxes of
    this apply. The blocks it handed out all lie below, so they are not walked again: each walk
    of n ranges right after a fork also copies the pages of their n objects (the refcounts are
    written), which made the ranges alone a millisecond of each of 1000 creates.

    A sandbox's own pinned range is among them: it comes here only when that range is held by
    another sandbox, or there is none (see _kept_range)."""
    if ctx.pinned_ids is None:
        ctx.pinned_ids = ids.pinned_ranges(os.path.dirname(ctx.persistent_dir(sandbox.name)), "")
    return [*_known_ids(ctx), *ctx.pinned_ids, *ctx.kept_ids]


def _known_ids(ctx: ApplyContext) -> list[tuple[int, int]]:
    """The ranges the units declare and those of the sandboxes observed, gathered once per
    apply (again for each sandbox, they made 1000 creates quadratic). What this apply hands
    out is in ctx.reserved_ids; a range freed during the apply stays taken until the next."""
    if ctx.known_ids is None:
        taken = []
        for other in ctx.desired.sandboxes.values():
            declared = ids.declared_ranges(other)
            if declared:
                taken += [(outside, count) for _, outside, count in (*declared[0], *declared[1])]
        for record in ctx.actual.records.values():
            mapping = record.runtime.idmap
            if mapping is not None:
                taken += [(outside, count) for _, outside, count in (*mapping.uid, *mapping.gid)]
        ctx.known_ids = taken
    return ctx.known_ids


def _rootfs_plan(
    ctx: ApplyContext, sandbox: DesiredSandbox, source: str, idmap: IdMapping | None, runtime: str
) -> RootfsPlan:
    rootfs = sandbox.unit.rootfs
    layers = ctx.persistent_dir(sandbox.name) if rootfs.persistent else runtime
    _private_data_dirs(ctx, sandbox, layers)
    for sub in ("root", "lower"):
        os.makedirs(os.path.join(runtime, sub), mode=0o755, exist_ok=True)
    owner = _host_ids(idmap)
    upper, work = os.path.join(layers, "upper"), os.path.join(layers, "work")
    if rootfs.mode == "overlay":
        for path in (upper, work):
            os.makedirs(path, mode=0o755, exist_ok=True)
        os.chown(upper, *owner)
    ns = sandbox.unit.namespaces
    mounts = [*boot.mounts(sandbox), *_mounts(sandbox, runtime)]
    key = "network" if sandbox.unit.network is not None else "sandbox.boot"
    for target, host_file in name_files.name_files(ctx, sandbox).items():
        mounts.append(Mount("bind", target, source=host_file, read_only=True, key=key))
    return RootfsPlan(
        stage=os.path.join(runtime, "root"),
        mode=rootfs.mode,
        source=source,
        upper=upper,
        work=work,
        lower=os.path.join(runtime, "lower"),
        owner=owner,
        mounts=tuple(mounts),
        own_proc=ns.pid,
        own_sys=ns.net,
        own_ipc=ns.ipc,
        shm_size=sandbox.unit.resources.shm_bytes(),
        cgroup2=_cgroup_view(ctx, sandbox),
        cgroup_named=_cgroup_named(ctx, sandbox),
    )


def _cgroup_view(ctx: ApplyContext, sandbox: DesiredSandbox) -> str | None:
    """/sys/fs/cgroup inside: the sandbox's own cgroup on v2 when it has a cgroup namespace,
    writable (delegated, see _start) for a booted init, read-only otherwise."""
    if ctx.cgroups.version != 2 or not sandbox.unit.namespaces.cgroup:
        return None
    return "rw" if sandbox.unit.sandbox.boot else "ro"


def _cgroup_named(ctx: ApplyContext, sandbox: DesiredSandbox) -> tuple[str, ...]:
    """/sys/fs/cgroup inside on a v1 or hybrid host: for a booted init with a cgroup namespace,
    the named hierarchies its cgroup is delegated in (see _start); nothing otherwise."""
    if ctx.cgroups.version != 1 or not sandbox.unit.namespaces.cgroup:
        return ()
    return ctx.cgroups.named if sandbox.unit.sandbox.boot else ()


def _private_data_dirs(ctx: ApplyContext, sandbox: DesiredSandbox, layers: str) -> None:
    """The image dir and the persistent layers are not for other local users (see
    sandman.private_dirs): the sandbox reaches its root through mounts sandman makes as host
    root, never through these paths."""
    rootfs = sandbox.unit.rootfs
    if rootfs.image is not None:
        _private(sandbox, ctx.paths.image_dir, "image dir (--image-dir)")
    if rootfs.persistent:
        _private(sandbox, os.path.dirname(layers), "persistent sandboxes dir")
        _private(sandbox, layers, "persistent sandbox dir")


def _private(sandbox: DesiredSandbox, path: str, what: str) -> None:
    from sandman.private_dirs import PrivateDirError, private_dir

    try:
        private_dir(path, what)
    except PrivateDirError as exc:
        raise ApplyError(f"sandbox/{sandbox.name}", f"{sandbox.file}: {exc}") from exc


def _host_ids(idmap: IdMapping | None) -> tuple[int, int]:
    """The host uid and gid of the sandbox's root."""
    if idmap is None:
        return (0, 0)
    return (_outside(idmap.uid, 0), _outside(idmap.gid, 0))


def _outside(ranges: tuple[tuple[int, int, int], ...], inside: int) -> int:
    for start, outside, count in ranges:
        if start <= inside < start + count:
            return outside + inside - start
    return 65534


def _mounts(sandbox: DesiredSandbox, runtime: str) -> Iterator[Mount]:
    from sandman.units.plain import BindMount, ProcMount, TmpfsMount  # see above

    for index, mount in enumerate(sandbox.unit.mount):
        key = f"mount[{index}]"
        if isinstance(mount, BindMount):
            yield Mount(
                "bind", mount.target, source=mount.source, read_only=mount.read_only, key=key
            )
        elif isinstance(mount, TmpfsMount):
            yield Mount(
                "tmpfs",
                mount.target,
                read_only=mount.read_only,
                size=mount.size,
                mode=mount.mode,
                key=key,
            )
        elif isinstance(mount, ProcMount):
            yield Mount("proc", mount.target, key=key)
        else:
            work = os.path.join(runtime, f"overlay-work-{index}") if mount.upper else None
            if work:
                os.makedirs(work, mode=0o700, exist_ok=True)
            yield Mount(
                "overlay",
                mount.target,
                read_only=mount.read_only,
                lower=mount.lower,
                upper=mount.upper,
                work=work,
                key=key,
            )


def _spawn_spec(
    ctx: ApplyContext,
    sandbox: DesiredSandbox,
    plan: RootfsPlan,
    idmap: IdMapping | None,
    cgroup: str,
    *,
    keeper: Keeper | None = None,
) -> SpawnSpec:
    unit = sandbox.unit
    flags = sc.CLONE_NEWNS
    for name, flag in _FLAGS.items():
        if getattr(unit.namespaces, name):
            flags |= flag
    time_offsets = None
    if unit.namespaces.time:
        offsets = unit.time
        time_offsets = (offsets.monotonic_offset, offsets.boottime_offset) if offsets else (0, 0)
    return SpawnSpec(
        name=sandbox.name,
        command=boot.command(ctx, sandbox),
        confinement=confinement_of(sandbox_declared(sandbox.canonical())),
        namespaces=flags,
        rootfs=plan,
        # A booted init's stdio is its console, whose keeper writes the log.
        log_path=None if keeper else os.path.join(ctx.paths.log_dir, f"{sandbox.name}.log"),
        console_socket=keeper.init_end if keeper else None,
        console_on_dev=keeper is not None,
        hostname=sandbox.hostname if unit.namespaces.uts else None,
        idmap=idmap,
        time_offsets=time_offsets,
        join_cgroup=lambda pid: ctx.cgroups.join(cgroup, pid),
        cgroup_dir=ctx.cgroups.birth_dir(cgroup),
        prepare=(lambda pid: networks.attach(ctx, sandbox, pid)) if unit.network else None,
        inside_root=boot.inside_root(sandbox),
        timeout=spawn_timeout(),
        pauses=faults.pauses(f"sandbox/{sandbox.name}"),
    )


def spawn_timeout() -> float:
    """Seconds a create may go without progress before it is given up (kernel/spawn.py):
    generous, since a busy host is slow, not stuck; SANDMAN_SPAWN_TIMEOUT changes it."""
    text = os.environ.get("SANDMAN_SPAWN_TIMEOUT", "")
    try:
        value = float(text) if text else DEFAULT_SPAWN_TIMEOUT
    except ValueError:
        return DEFAULT_SPAWN_TIMEOUT
    return value if value > 0 else DEFAULT_SPAWN_TIMEOUT


def _record(
    ctx: ApplyContext,
    sandbox: DesiredSandbox,
    *,
    pid: int,
    cgroup: str,
    idmap: IdMapping | None,
    runtime: str,
    plan: RootfsPlan,
    keeper: int = 0,
) -> Record:
    start = procs.start_time(pid) or 0
    network = sandbox.unit.network
    facts = Runtime(
        pid=pid,
        start_time=start,
        started_at=round(procs.started_at(start), 3),
        cgroup=cgroup,
        namespaces=procs.namespace_inodes(pid),
        runtime_dir=runtime,
        rootfs=plan.source,
        upper=plan.upper if plan.mode == "overlay" else None,
        log=os.path.join(ctx.paths.log_dir, f"{sandbox.name}.log"),
        idmap=None if idmap is None else IdRanges(idmap.uid, idmap.gid),
        auto_ids=idmap.uid[0][1] if idmap and ids.declared_ranges(sandbox) is None else None,
        environment=dict(sandbox.unit.sandbox.environment),
        user=sandbox.unit.sandbox.user,
        bridge=None if network is None else ctx.desired.networks[network.attach].bridge,
        keeper_pid=keeper,
        keeper_start_time=(procs.start_time(keeper) or 0) if keeper else 0,
    )
    return record_of("sandbox", sandbox.name, sandbox.canonical(), facts, sandbox.file)


def destroy(
    ctx: ApplyContext, record: Record, keep_record: bool = False, learn_end: bool = False
) -> int | None:
    """Stop the init (its stop signal, up to `stop_timeout`, then every process of the cgroup
    killed), remove the cgroup, the runtime dir and the record. The persistent upper dir, when
    there is one, stays. With `learn_end`, the init's wait status when the kernel tells it (a
    stop records how the init ended); None otherwise."""
    runtime = record.runtime
    networks.detach(ctx, record)
    running = procs.is_running(runtime.pid, runtime.start_time)
    ending = InitEnd(runtime.pid) if running else None
    try:
        if ending is not None:
            declared = record.sandbox
            ending.ask(declared.stop_signal_number(), declared.stop_seconds())
            faults.step(f"sandbox/{record.name}: init stopped")
        if runtime.cgroup is not None:
            _remove_cgroup(ctx, runtime.cgroup)
            faults.step(f"sandbox/{record.name}: cgroup removed")
        _end_keeper(runtime)
        status = ending.status() if ending is not None and learn_end else None
    finally:
        if ending is not None:
            ending.close()
    runtime_dir = runtime.runtime_dir
    if runtime_dir is not None and runtime_dir.startswith(ctx.paths.state_dir):
        _remove_tree(runtime_dir)
        faults.step(f"sandbox/{record.name}: runtime dir removed")
    if not keep_record:
        remove_record(ctx.paths.state_dir, "sandbox", record.name)
        ctx.records.pop(record.key, None)
    return status


def _remove_cgroup(ctx: ApplyContext, cgroup: str) -> None:
    if ctx.cgroups.exists(cgroup):
        ctx.cgroups.kill(cgroup)
        ctx.cgroups.remove(cgroup)


def _end_keeper(runtime: Runtime) -> None:
    """The console keeper ends with its init by itself; one still there (the init's end not
    yet seen, or an init that never ended) is ended by the PID recorded: a pidfd opened first,
    then the start time compared, so a recycled PID is never signalled."""
    if not runtime.keeper_pid:
        return
    try:
        pidfd = sc.pidfd_open(runtime.keeper_pid)
    except OSError:
        return  # gone already
    try:
        if procs.is_running(runtime.keeper_pid, runtime.keeper_start_time):
            with contextlib.suppress(OSError):
                sc.pidfd_send_signal(pidfd, signal.SIGTERM)
    finally:
        os.close(pidfd)


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def taint(ctx: ApplyContext, record: Record) -> Record:
    """The record marked tainted, written: the next plan recreates the object, whatever else."""
    tainted = record._replace(tainted=True)
    write_record(ctx.paths.state_dir, tainted)
    ctx.records[tainted.key] = tainted
    faults.step(f"sandbox/{record.name}: record tainted")
    return tainted


def rewrite_record(ctx: ApplyContext, sandbox: DesiredSandbox, old: Record) -> Record:
    """After an in-place update: the new unit, the same running init (or, stopped, still none:
    the next start runs the new unit)."""
    canonical = sandbox.canonical()
    record = record_of("sandbox", sandbox.name, canonical, old.runtime, sandbox.file)
    record = record._replace(stopped=old.stopped)
    write_record(ctx.paths.state_dir, record)
    ctx.records[record.key] = record
    return record


def _remove_tree(path: str) -> None:
    import shutil  # with bz2 and lzma, 2.4 ms of every apply: only when a sandbox goes

    shutil.rmtree(path, ignore_errors=True)
