"""Start a sandbox's init in its namespaces, and leave nothing of sandman running beside it.

The path, with the reasons for its order:
1. apply forks the first child (start(); finish() waits for it, so that apply can start several
   sandboxes before it waits for any). On cgroup v2 the child is born in the sandbox's cgroup
   (clone3 with CLONE_INTO_CGROUP, Linux 5.7: see _fork_into); elsewhere, or where the kernel
   refuses that, it is forked and joins the cgroup first thing. Either way every later process is
   born in it. The first child makes the sandbox's user namespace with its id maps (through a short-
   lived holder process, see make_user_namespace), starts a session of its own, unshares a mount
   namespace and mounts the root and the declared host mounts as the host's root user, the image
   seen through an idmapped mount (see rootfs.py).
2. It joins the sandbox's user namespace and unshares all the others, so that every new
   namespace is owned by the sandbox's user namespace and its root may use them (bind port 80,
   mount /proc).
3. It writes the time namespace offsets (they must be set before any process enters), then forks
   the init-to-be, which is PID 1 of the new pid namespace, sends its PID to apply and exits. The
   init is reparented to the host's init: no sandman process stays per sandbox.
   With a user namespace (and no time namespace or namespace to join), steps 1 to 3 are
   shorter (_clone_init): the first child clones the init-to-be straight into a new user
   namespace and the others (clone3), writes its id maps, mounts the root through that user
   namespace's idmapped view in the mount namespace they share, and lets it go on, which
   unshares its own mount namespace: two processes per create instead of three.
4. The init-to-be mounts /proc, /sys, /dev, pivots into the root, takes its hostname, user and
   working directory, and execs the command. Its report pipe is close-on-exec: apply reading EOF
   without an error means the exec happened, so `apply` returns with the init running.
Every module the children use is imported before the fork: after pivot_root no Python library
path exists any more.

Why the create protocol cannot deadlock
---------------------------------------
Apply (A), the first child (F), the user namespace holder F makes (H) and the init-to-be (I)
talk over two pipes per sandbox:
- report: F and I write JSON lines (each step as it begins, the init's PID, an error); A reads.
  F's copy closes when F exits, I's when it execs (close-on-exec), so A reads EOF then.
- go (only with a prepare step): A writes one byte once the sandbox's network is ready; I reads.
  EOF there (A closed it without the byte) tells I to give up.
The waits: A waits on report; F waits on H, H on F (each holds the other's pipe end only until
it is done); on the clone3 way I first waits on F's ready pipe, which F writes or closes
before it reports I's PID; I waits on go, and only after F has sent I's PID. On that line A
runs the prepare step and at once either writes the byte or, if prepare failed, closes go and
kills I. Each wait thus points at a process that is running towards the answer, never back
at the waiter: no cycle.
This holds only if nobody else holds a write end. Every fd apply opens is close-on-exec, but these
children wait before they exec, so each one closes every fd not on its own keep-list right after
its fork (close_fds_except): a child of one create holds nothing of another create, nor apply's
lock or netlink sockets. Each of A's waits is bounded as well: a create whose children report
nothing for `timeout` seconds has its processes killed and fails, naming the step it was at; the
caller undoes it (its cgroup kill takes whatever was forked) and goes on with the others.
"""

import contextlib
import errno
import fcntl
import gc
import json
import os
import resource as resource_limits
import select
import signal
import socket
import struct
import termios
import time
from collections.abc import Callable, Iterator, Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, NamedTuple

from sandman.kernel import loginstances, pty, rootfs
from sandman.kernel import syscalls as sc
from sandman.kernel.rootfs import RootfsPlan

if TYPE_CHECKING:
    from sandman.kernel.security import Confinement

_SIOCGIFFLAGS = 0x8913  # <linux/sockios.h>
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1  # <net/if.h>


# The value types here are NamedTuples, not dataclasses: sandman-oci's create imports this module
# on every call, and dataclasses (with inspect) and building eleven classes cost it about 15 ms.
class IdMapping(NamedTuple):
    """uid_map and gid_map lines: (inside, outside, count)."""

    uid: tuple[tuple[int, int, int], ...]
    gid: tuple[tuple[int, int, int], ...]


class SpawnSpec(NamedTuple):
    """Everything the children need, computed before the fork."""

    name: str
    command: tuple[str, ...]
    confinement: "Confinement"  # quoted: imported for type checking only
    namespaces: int  # CLONE_NEW* flags, CLONE_NEWNS always among them
    rootfs: RootfsPlan
    # The log file the init's stdout and stderr go to (its stdin is /dev/null); None: the init
    # keeps the caller's fds 0, 1 and 2 (the OCI runtime passes its client's stdio through).
    log_path: str | None
    hostname: str | None = None
    idmap: IdMapping | None = None
    time_offsets: tuple[int, int] | None = None  # monotonic, boottime, in nanoseconds
    # Run in the first child before anything else, with its PID: joining the sandbox's cgroup.
    join_cgroup: Callable[[int], None] | None = None
    # cgroup v2: the sandbox's cgroup directory, for the first child to be born in instead
    # (join_cgroup is then not called; it stays the way in where the kernel refuses).
    cgroup_dir: str | None = None
    # Run in apply with the init's host PID while the init waits before exec: its network.
    prepare: Callable[[int], None] | None = None
    # Run in the init-to-be right after pivot_root, in the sandbox's root with all its
    # capabilities: the files a booted init finds (kernel/boot_files.py).
    inside_root: Callable[[], None] | None = None
    # Seconds without a report from the children before the create is given up (see above).
    timeout: float = 60.0
    # A FIFO the init opens for writing once it is ready, just before exec: the open blocks until
    # someone opens it for reading (the OCI `start`), as runc's exec.fifo. The create returns
    # while the init waits there (its report pipe is closed first). See _wait_at_gate.
    exec_gate: str | None = None
    # A connected AF_UNIX socket (kept through the forks): the init makes a pty in its own devpts,
    # sends the master there (one SCM_RIGHTS message) and takes the slave as its terminal.
    console_socket: int | None = None
    # With console_socket: the pty's slave is also bound on /dev/console (a booted init's
    # console, whose master the console keeper holds: kernel/console.py).
    console_on_dev: bool = False
    # setrlimit(2) triples (resource, soft, hard), set in the init before it takes its user.
    rlimits: tuple[tuple[int, int, int], ...] = ()
    # The init's environment exactly, without the HOSTNAME the init otherwise adds.
    exact_environment: bool = False
    # Existing namespaces to join instead of making new ones: (CLONE_NEW* flag, path of the
    # namespace file, e.g. /run/netns/NAME or /proc/PID/ns/net), opened on the host side.
    join_namespaces: tuple[tuple[int, str], ...] = ()
    # The init's /proc/self/oom_score_adj (-1000..1000); None leaves the inherited one.
    oom_score_adj: int | None = None
    # Tests only: the children sleep this long at the named step (see STEPS), to force an order.
    pauses: Mapping[str, float] = MappingProxyType({})


# The steps the children report, by name: (the unit key the step serves, what it does).
STEPS = {
    "cgroup": ("resources", "joining the sandbox's cgroup"),
    "userns": ("namespaces.user", "making the user namespace"),
    "rootfs": ("rootfs", "mounting the root on the host side"),
    "namespaces": ("namespaces", "making the sandbox's namespaces"),
    "fork": ("sandbox.command", "forking the init"),
    "inside": ("rootfs", "mounting /proc, /sys and /dev in the sandbox"),
    "identity": ("security", "taking the hostname, security settings and user"),
    "exec": ("sandbox.command", "executing the command"),
}


class SpawnError(OSError):
    """The sandbox could not be started; `key` names the unit key the failing step serves."""

    def __init__(self, key: str, message: str, errno: int = 0, filename: str | None = None) -> None:
        super().__init__(errno, message, filename)
        self.key = key

    def __str__(self) -> str:
        if self.errno:
            return super().__str__()
        return f"{self.strerror}: `{self.filename}`" if self.filename else str(self.strerror)


class Started:
    """A sandbox whose first child is forked: what finish() needs to see it through."""

    __slots__ = ("first", "go_write", "prepare", "report_read", "timeout")

    def __init__(
        self,
        first: int,
        report_read: int,
        go_write: int,  # -1 without a prepare step, or once closed
        prepare: Callable[[int], None] | None,
        timeout: float,
    ) -> None:
        self.first = first
        self.report_read = report_read
        self.go_write = go_write
        self.prepare = prepare
        self.timeout = timeout


class _Progress:
    """What finish() has heard from the children so far."""

    __slots__ = ("error", "failed", "init", "step")

    def __init__(self) -> None:
        self.step = "fork"  # the last step reported, a key of STEPS
        self.init = 0
        self.error: dict[str, object] | None = None
        self.failed: BaseException | None = None  # the prepare step's error


class _InitFds(NamedTuple):
    """The fds the init-to-be holds: the staged root, the log (-1 without), the report pipe, the
    go pipe (-1 without), the exec gate (an O_PATH fd of the FIFO, -1 without)."""

    stage: int
    log: int
    report: int
    go: int
    gate: int


class _StalledError(Exception):
    """The children reported nothing for the whole timeout."""


def spawn(spec: SpawnSpec) -> int:
    """Start the sandbox and return the host PID of its init, once the command was exec'd."""
    return finish(start(spec))


def start(spec: SpawnSpec) -> Started:
    """Fork the sandbox's first child and return at once. Its slow part (on cgroup v1, joining
    the cgroup waits for an RCU grace period) then runs while the caller starts other sandboxes;
    concurrent joins share grace periods. finish() or abandon() must follow."""
    # A new file per start, the earlier ones rotated (loginstances.py); never through a symlink
    # or into another file's hard link (logfile.py).
    log_fd = -1
    if spec.log_path is not None:
        log_fd = loginstances.start_instance(spec.log_path, spec.name)
    try:
        return _fork_first(spec, log_fd)
    finally:
        if log_fd >= 0:
            os.close(log_fd)


def finish(started: Started) -> int:
    """Wait for the init's PID, run the prepare step, let it exec; the init's host PID."""
    try:
        return _parent(started)
    finally:
        _close(started)


def abandon(started: Started) -> None:
    """finish() will not run: the children read EOF where they wait, and exit."""
    _close(started)
    _reap(started.first)


def _close(started: Started) -> None:
    for fd in (started.report_read, started.go_write):
        if fd >= 0:
            with contextlib.suppress(OSError):
                os.close(fd)
    started.report_read = started.go_write = -1


def _fork_first(spec: SpawnSpec, log_fd: int) -> Started:
    report_read, report_write = os.pipe2(os.O_CLOEXEC)
    go_read, go_write = os.pipe2(os.O_CLOEXEC) if spec.prepare else (-1, -1)
    try:
        first, born_in_cgroup = _fork_into(spec.cgroup_dir)
        if first == 0:
            _first_child(spec, log_fd, report_write, go_read, born_in_cgroup)
    except BaseException:
        os.close(report_read)
        if go_write >= 0:
            os.close(go_write)
        raise
    finally:
        # The parent keeps only the read ends: EOF there means every child exec'd or exited.
        os.close(report_write)
        if go_read >= 0:
            os.close(go_read)
    return Started(first, report_read, go_write, spec.prepare, spec.timeout)


# The refusals of clone3(CLONE_INTO_CGROUP) that say this kernel (or a seccomp filter around
# sandman) will not do it for any cgroup: no clone3 (ENOSYS, before 5.3), no cgroup field
# (E2BIG) or flag (EINVAL) before 5.7, and EOPNOTSUPP, a cgroup tree whose cgroups cannot take
# processes this way. Once one is seen, this process forks and joins without asking again.
_KERNEL_REFUSALS = frozenset({errno.ENOSYS, errno.E2BIG, errno.EINVAL, errno.EOPNOTSUPP})
_refused: list[int] = []  # the errno of the first such refusal


def _fork_into(cgroup_dir: str | None) -> tuple[int, bool]:
    """os.fork(), or, given a cgroup v2 directory, a fork born in that cgroup: (the child's PID,
    or 0 in the child; whether it was born in the cgroup). Any refusal falls back to os.fork():
    one about this cgroup alone (it is gone, full, not a leaf) is then reported, naming the
    cgroup's file, by the join that the child makes instead."""
    if cgroup_dir is None or _refused:
        return os.fork(), False
    try:
        fd = os.open(cgroup_dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return os.fork(), False
    try:
        return sc.fork_into_cgroup(fd), True
    except OSError as exc:
        if exc.errno in _KERNEL_REFUSALS:
            _refused.append(exc.errno)
        return os.fork(), False
    finally:
        os.close(fd)  # in the child too: it is on no keep-list


def make_user_namespace(idmap: IdMapping) -> int:
    """A user namespace with the sandbox's id maps, as an fd.

    It exists before the sandbox's other namespaces so that the host side can idmap the image
    with it (files owned by the host's root appear owned by the sandbox's root) and the first
    child can then join it with setns. A short-lived process makes it: unshare moves its
    caller, and apply itself must stay where it is.
    """
    ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
    hold_read, hold_write = os.pipe2(os.O_CLOEXEC)
    holder = os.fork()
    if holder == 0:
        status = 0
        try:
            # Only its own ends: the parent closing hold_write then reads as EOF here. (The
            # collector is off, as in its parent.)
            sc.close_fds_except((ready_write, hold_read))
            sc.unshare(sc.CLONE_NEWUSER)
            os.write(ready_write, b"1")
            os.read(hold_read, 1)
        except BaseException:
            status = 1
        finally:
            os._exit(status)
    os.close(ready_write)
    os.close(hold_read)
    try:
        if os.read(ready_read, 1) != b"1":
            raise SpawnError("namespaces.user", "cannot create a user namespace")
        _write_id_maps(holder, idmap)
        return os.open(f"/proc/{holder}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(ready_read)
        os.close(hold_write)
        _reap(holder)


def _parent(started: Started) -> int:
    progress = _Progress()
    try:
        for message in _messages(started.report_read, started.timeout):
            _take(started, progress, message)
    except _StalledError:
        _give_up(started, progress)
        key, doing = STEPS[progress.step]
        raise SpawnError(
            key,
            f"no progress for {started.timeout:g} s while {doing}; the sandbox's processes "
            "were killed (SANDMAN_SPAWN_TIMEOUT sets the limit)",
        ) from None
    _reap(started.first)
    return _outcome(progress)


def _messages(fd: int, timeout: float) -> Iterator[dict[str, object]]:
    """The children's JSON lines until EOF; _StalledError when none comes for `timeout` seconds.
    The clock restarts at each line, and while the caller handles one (the prepare step)."""
    poller = select.poll()
    poller.register(fd, select.POLLIN)
    pending = b""
    while True:
        if not poller.poll(timeout * 1000):
            raise _StalledError
        chunk = os.read(fd, 65536)
        if not chunk:
            return
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            yield json.loads(line)


def _take(started: Started, progress: _Progress, message: dict[str, object]) -> None:
    if "step" in message:
        progress.step = str(message["step"])
    elif "pid" in message:
        progress.init = int(str(message["pid"]))
        progress.failed = _prepare(started, progress.init)
    elif "error" in message:
        progress.error = message


def _prepare(started: Started, pid: int) -> BaseException | None:
    """Run the prepare step, then let the init exec. On failure the init is told at once (go
    closed, then killed): it must not wait for a byte that will never come."""
    if started.prepare is None:
        return None
    try:
        started.prepare(pid)
    except Exception as exc:
        _close_go(started)
        _kill(pid)
        if isinstance(exc, OSError) and not isinstance(exc, SpawnError):
            return SpawnError("network", exc.strerror or str(exc), exc.errno or 0, exc.filename)
        return exc
    try:
        os.write(started.go_write, b"1")
    except BrokenPipeError:
        # The init is gone already: it failed in its own set-up (a working directory missing)
        # while apply prepared. Its error is on its way down the report pipe and is the one
        # _outcome reports; this stands only if none comes.
        return SpawnError("", "the sandbox's init exited before it was told to start")
    return None


def _outcome(progress: _Progress) -> int:
    error = progress.error
    # The prepare step runs while the init finishes its own set-up: when the init failed there
    # (a working directory missing), the prepare fails only because the init is gone, and the
    # init's error is the one to report. Its "apply could not prepare" answer is not.
    own_failure = error is not None and error.get("key") != "network"
    if progress.failed is not None and not own_failure:
        _kill(progress.init)
        raise progress.failed
    if error is not None:
        if progress.init:
            _kill(progress.init)
        errno = int(str(error.get("errno") or 0))
        filename = str(error["filename"]) if error.get("filename") else None
        raise SpawnError(str(error.get("key", "")), str(error["error"]), errno, filename)
    if not progress.init:
        raise SpawnError("", "the sandbox's first process exited without starting the init")
    return progress.init


# How long a killed first child gets to be reaped before finish() leaves it (a zombie of the
# caller's, rather than an apply that never returns).
_REAP_AFTER_KILL = 5.0


def _give_up(started: Started, progress: _Progress) -> None:
    _close_go(started)
    if progress.init:
        _kill(progress.init)
    _kill(started.first)
    _reap(started.first, _REAP_AFTER_KILL)


def _close_go(started: Started) -> None:
    if started.go_write >= 0:
        with contextlib.suppress(OSError):
            os.close(started.go_write)
        started.go_write = -1


def _write_id_maps(pid: int, idmap: IdMapping | None) -> None:
    assert idmap is not None
    for name, ranges in (("uid_map", idmap.uid), ("gid_map", idmap.gid)):
        lines = "".join(f"{inside} {outside} {count}\n" for inside, outside, count in ranges)
        _write_file(f"/proc/{pid}/{name}", lines)


def _write_file(path: str, text: str) -> None:
    """TEXT in one write(2), as /proc's maps and settings take a value. Bytes, not a text file:
    a text file's codec is a module import (0.6 ms of the first child's path), and after
    pivot_root the init could import none."""
    fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def _reap(pid: int, timeout: float | None = None) -> None:
    """Wait for a child's exit: without end, or at most `timeout` seconds."""
    flags = 0
    if timeout is not None:
        flags = os.WNOHANG
        with contextlib.suppress(OSError):
            pidfd = sc.pidfd_open(pid)
            try:
                select.select([pidfd], [], [], timeout)
            finally:
                os.close(pidfd)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, flags)


def _kill(pid: int) -> None:
    """A child that failed or stalled before exec; make sure it ends."""
    if pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _report(fd: int, **message: object) -> None:
    os.write(fd, json.dumps(message).encode() + b"\n")


def _step(spec: SpawnSpec, report: int, step: str) -> None:
    """Tell apply which step begins (what a timeout names), then pause there if a test asks."""
    _report(report, step=step)
    pause = spec.pauses.get(step)
    if pause:
        time.sleep(pause)


def _report_error(fd: int, exc: BaseException) -> None:
    key = getattr(exc, "key", "")
    if isinstance(exc, OSError):
        _report(
            fd, error=str(exc.strerror or exc), errno=exc.errno or 0, filename=exc.filename, key=key
        )
    else:
        _report(fd, error=f"{type(exc).__name__}: {exc}", key=key)


def _first_child(
    spec: SpawnSpec, log_fd: int, report: int, go_read: int, born_in_cgroup: bool
) -> None:
    status = 1
    try:
        # First of all: nothing of apply's or of another create's stays open here (see above).
        # The collector stays off: a garbage socket of apply's, finalized here, would close
        # whatever fd now has its number.
        gc.disable()
        sc.close_fds_except((log_fd, report, go_read, _console_fd(spec)))
        if spec.join_cgroup is not None or born_in_cgroup:
            # Reported on both ways in, so that a pause at this step (SANDMAN_FAULT_PAUSE)
            # holds the child at the same point of the protocol whichever way it took.
            _step(spec, report, "cgroup")
            if spec.join_cgroup is not None and not born_in_cgroup:
                spec.join_cgroup(os.getpid())
        if _clones_init(spec) and _clone_init(spec, _InitFds(-1, log_fd, report, go_read, -1)):
            status = 0
            return
        # Made here, not in apply: its fork and wait then overlap with other sandboxes' starts.
        userns = None
        if spec.idmap is not None:
            _step(spec, report, "userns")
            userns = make_user_namespace(spec.idmap)
        joined = [
            (os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag) for flag, path in spec.join_namespaces
        ]
        _step(spec, report, "rootfs")
        if os.getsid(0) != os.getpid():  # _clone_init, refused, may have made it
            os.setsid()
        _enter_mount_namespace(joined, spec.rootfs.own_mounts)
        rootfs.mount_host_side(spec.rootfs, userns)
        _step(spec, report, "namespaces")
        _enter_namespaces(spec, userns, joined)
        if userns is not None:
            os.close(userns)
        # In the new mount namespace, and still with the host's uid, which owns the state dir.
        stage = rootfs.open_stage(spec.rootfs)
        gate = _open_gate(spec.exec_gate)
        _become_namespace_root(spec, userns is not None)
        _step(spec, report, "fork")
        init = os.fork()
        if init == 0:
            _init_child(spec, _InitFds(stage, log_fd, report, go_read, gate))
        _report(report, pid=init)
        status = 0
    except BaseException as exc:
        _report_error(report, exc)
    finally:
        os._exit(status)


def _clones_init(spec: SpawnSpec) -> bool:
    """Whether the init can be born in its namespaces (_clone_init): with a user namespace, and
    none to join (setns must come before) and no time namespace (its offsets must be written
    before any process is in it)."""
    return (
        spec.idmap is not None
        and not spec.join_namespaces
        and not spec.namespaces & sc.CLONE_NEWTIME
    )


def _clone_init(spec: SpawnSpec, fds: _InitFds) -> bool:
    """The first child's way when _clones_init: the init-to-be is cloned straight into new
    user, pid and the other namespaces (clone3), so that no holder process is forked for the
    user namespace and no second fork for PID 1 (about a fifth of the spawn path). It shares
    this child's new mount namespace and waits on a pipe while this child writes its id maps
    and mounts the root on the host side through the idmapped view of its user namespace; then
    it unshares a mount namespace of its own (owned by its user namespace, as on the other
    path) and goes on as _init_child. False, with nothing done but the session and the mount
    namespace, where no clone3 is allowed (ENOSYS: a seccomp filter around sandman)."""
    assert spec.idmap is not None
    os.setsid()
    sc.unshare(sc.CLONE_NEWNS)
    _step(spec, fds.report, "namespaces")
    ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
    try:
        init = sc.fork_into_namespaces(spec.namespaces & ~sc.CLONE_NEWNS | sc.CLONE_NEWUSER)
    except OSError as exc:
        os.close(ready_read)
        os.close(ready_write)
        if exc.errno == errno.ENOSYS:
            return False
        raise
    if init == 0:
        os.close(ready_write)
        _cloned_init(spec, fds, ready_read)
    os.close(ready_read)
    try:
        _step(spec, fds.report, "userns")
        _write_id_maps(init, spec.idmap)
        userns = os.open(f"/proc/{init}/ns/user", os.O_RDONLY | os.O_CLOEXEC)
        try:
            _step(spec, fds.report, "rootfs")
            rootfs.mount_host_side(spec.rootfs, userns)
        finally:
            os.close(userns)
        _step(spec, fds.report, "fork")
        os.write(ready_write, b"1")
    except BaseException:
        _kill(init)
        raise
    finally:
        os.close(ready_write)
    _report(fds.report, pid=init)
    return True


def _cloned_init(spec: SpawnSpec, fds: _InitFds, ready: int) -> None:
    """The init-to-be of _clone_init, until it is where _init_child begins."""
    try:
        if os.read(ready, 1) != b"1":
            os._exit(1)  # the first child failed, and says why itself
        os.close(ready)
        sc.unshare(sc.CLONE_NEWNS)
        stage = rootfs.open_stage(spec.rootfs)
        gate = _open_gate(spec.exec_gate)
        _become_namespace_root(spec, True)
    except BaseException as exc:
        _report_error(fds.report, exc)
        os._exit(127)
    _init_child(spec, _InitFds(stage, fds.log, fds.report, fds.go, gate))


def _enter_mount_namespace(joined: list[tuple[int, int]], own: bool) -> None:
    """A mount namespace of its own, or the one to join (an OCI config's path; taken out of
    `joined`): the root is then built and pivoted into in that namespace, as runc does. Neither
    (`own` off, an OCI config without one): the caller's, where the root is built and chrooted
    into."""
    for fd, flag in joined:
        if flag == sc.CLONE_NEWNS:
            joined.remove((fd, flag))
            sc.setns(fd, sc.CLONE_NEWNS)
            os.close(fd)
            return
    if own:
        sc.unshare(sc.CLONE_NEWNS)


def _enter_namespaces(spec: SpawnSpec, userns: int | None, joined: list[tuple[int, int]]) -> None:
    for fd, flag in joined:
        sc.setns(fd, flag)
        os.close(fd)
    others = spec.namespaces & ~sc.CLONE_NEWNS
    if userns is None:
        sc.unshare(others)
    else:
        # Joined first, so that every namespace made next is owned by it and its root may use
        # them (bind port 80, mount /proc); a second mount namespace is one of those.
        sc.setns(userns, sc.CLONE_NEWUSER)
        sc.unshare(others | sc.CLONE_NEWNS)


def _become_namespace_root(spec: SpawnSpec, joined_userns: bool) -> None:
    if spec.time_offsets is not None:
        # Before changing ids: a process that changed them is no longer dumpable, and its
        # /proc/self files then belong to the host's root, out of its reach.
        monotonic, boottime = spec.time_offsets
        offsets = f"monotonic {_timespec(monotonic)}\nboottime {_timespec(boottime)}\n"
        _write_file("/proc/self/timens_offsets", offsets)
    if joined_userns:
        os.setresgid(0, 0, 0)
        os.setresuid(0, 0, 0)
        sc.prctl(sc.PR_SET_DUMPABLE, 1)


def _timespec(nanoseconds: int) -> str:
    seconds, rest = divmod(nanoseconds, 10**9)
    return f"{seconds} {rest}"


def _console_fd(spec: SpawnSpec) -> int:
    return -1 if spec.console_socket is None else spec.console_socket


def _open_gate(path: str | None) -> int:
    """An O_PATH fd of the exec gate FIFO, taken on the host side (inside, the path is out of
    reach after pivot_root); the init reopens it through /proc/self/fd for writing."""
    if path is None:
        return -1
    return os.open(path, os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)


def _init_child(spec: SpawnSpec, fds: _InitFds) -> None:
    stage, log_fd, report, go_read = fds.stage, fds.log, fds.report, fds.go
    try:
        sc.close_fds_except((stage, log_fd, report, go_read, fds.gate, _console_fd(spec)))
        if spec.oom_score_adj is not None:
            _write_oom_score_adj(spec.oom_score_adj)
        _step(spec, report, "inside")
        if spec.namespaces & sc.CLONE_NEWNET:
            allow_ping()  # through the host's /proc, before the sandbox's read-only one
        rootfs.mount_inside(spec.rootfs, stage)
        rootfs.enter_root(spec.rootfs)
        os.close(stage)
        if spec.inside_root is not None:
            spec.inside_root()
        if spec.namespaces & sc.CLONE_NEWNET:
            loopback_up()
        _step(spec, report, "identity")
        if spec.hostname is not None:
            sc.sethostname(spec.hostname)
        if spec.console_socket is not None:
            _take_console(spec.console_socket, spec.console_on_dev)
        _enter_working_directory(spec.confinement.working_directory)
        for resource, soft, hard in spec.rlimits:
            _set_rlimit(resource, soft, hard)
        # Everything above 2 closes at exec; the report pipe stays open until then. Marked
        # before the seccomp filter is loaded: a filter may refuse close_range (an OCI config's
        # allowlist written before Linux 5.9 does).
        sc.close_range(3, sc.FD_LAST, sc.CLOSE_RANGE_CLOEXEC)
        spec.confinement.take()
        if log_fd >= 0:
            _set_stdio(log_fd)
        # Waiting here holds only stdio (/dev/null and the log), report and go.
        if go_read >= 0 and os.read(go_read, 1) != b"1":
            raise SpawnError("network", "apply could not prepare the sandbox; the init stops")
        _step(spec, report, "exec")
        if fds.gate >= 0:
            _wait_at_gate(spec, fds.gate, report)
            report = 2  # the caller is gone: an exec failure goes to stderr
        os.execvpe(spec.command[0], list(spec.command), _environment(spec))
    except BaseException as exc:
        if isinstance(exc, FileNotFoundError) and exc.filename is None:
            exc = SpawnError(
                "sandbox.command",
                f"{spec.command[0]!r} is not found in the sandbox",
                exc.errno or 0,
            )
        _report_error(report, exc)
    os._exit(127)


def _wait_at_gate(spec: SpawnSpec, gate: int, report: int) -> None:
    """Close the report pipe (the caller reads EOF: the init is ready) and block until the gate
    FIFO is opened for reading, then say so with one byte. Checked first: the command exists,
    so that a missing one fails the create, not the start."""
    _check_command(spec)
    # The init of a pid namespace ignores every signal it has no handler for, even from the
    # host, but SIGKILL: a `kill TERM` of a created container must still end it, as it ends
    # runc's waiting init. These handlers last until the exec resets them.
    for signum in _ENDING_SIGNALS:
        signal.signal(signum, _exit_on_signal)
    os.close(report)
    fd = os.open(f"/proc/self/fd/{gate}", os.O_WRONLY | os.O_CLOEXEC)
    os.write(fd, b"0")
    os.close(fd)
    os.close(gate)


_ENDING_SIGNALS = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
    signal.SIGALRM,
)


def _exit_on_signal(signum: int, _frame: object) -> None:
    os._exit(128 + signum)


def _check_command(spec: SpawnSpec) -> None:
    program = spec.command[0]
    if "/" in program:
        candidates = [program]
    else:
        path = _environment(spec).get("PATH", os.defpath)
        candidates = [os.path.join(d or ".", program) for d in path.split(":")]
    for candidate in candidates:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return
    raise SpawnError(
        "process.args", f"{program!r}: executable file not found in $PATH", errno.ENOENT
    )


def _take_console(sock: int, on_dev: bool) -> None:
    """A pty of the sandbox's own devpts becomes the init's terminal and stdio, and with
    `on_dev` its /dev/console (bound on an empty file, as nspawn does); its master goes to the
    console socket, then the socket is closed."""
    master, slave = pty.open_inside(None)
    if on_dev:
        target = os.open("/dev/console", os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_CLOEXEC, 0o600)
        os.close(target)
        sc.mount(f"/proc/self/fd/{slave}", "/dev/console", None, sc.MS_BIND)
    pty.send_console(sock, master)
    os.close(master)
    os.close(sock)
    os.setsid()
    fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
    for target in (0, 1, 2):
        os.dup2(slave, target)
    os.close(slave)


def _write_oom_score_adj(value: int) -> None:
    try:
        _write_file("/proc/self/oom_score_adj", str(value))
    except OSError as exc:
        raise SpawnError(
            "process.oomScoreAdj", "cannot set the OOM score adjustment", exc.errno or 0
        ) from exc


def _set_rlimit(resource: int, soft: int, hard: int) -> None:
    try:
        resource_limits.setrlimit(resource, (soft, hard))
    except OSError as exc:
        raise SpawnError(
            "process.rlimits", f"cannot set rlimit {resource} to {soft}:{hard}", exc.errno or 0
        ) from exc


def loopback_up() -> None:
    """`lo` up in a new network namespace (it starts down), with the classic interface ioctls:
    no netlink library is needed for one flag."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, _SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


PING_GROUP_RANGE = "/proc/sys/net/ipv4/ping_group_range"
GID_MAX = 2**31 - 1  # the highest gid ping_group_range takes


def allow_ping() -> None:
    """Every group of the sandbox may open ICMP echo sockets in its new network namespace, so
    ping works without CAP_NET_RAW (Docker and Podman set the same). A new namespace starts at
    "1 0", nobody; the range is written in gids the writer's user namespace maps, from the
    lowest to the highest of /proc/self/gid_map (the whole range without a user namespace)."""
    with open("/proc/self/gid_map", "rb") as handle:
        ranges = [tuple(map(int, line.split())) for line in handle if line.strip()]
    low = min(inside for inside, _, _ in ranges)
    high = min(max(inside + count - 1 for inside, _, count in ranges), GID_MAX)
    try:
        _write_file(PING_GROUP_RANGE, f"{low} {high}")
    except OSError as exc:
        raise SpawnError(
            "namespaces.net", "cannot let the sandbox ping", exc.errno or 0, PING_GROUP_RANGE
        ) from exc


def _enter_working_directory(path: str) -> None:
    try:
        os.chdir(path)
    except OSError as exc:
        raise SpawnError(
            "sandbox.working_directory", "cannot enter the working directory", exc.errno or 0, path
        ) from exc


def _set_stdio(log_fd: int) -> None:
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(null)
    os.close(log_fd)  # 1 and 2 are the log now


def _environment(spec: SpawnSpec) -> dict[str, str]:
    if spec.exact_environment:
        return dict(spec.confinement.environment)
    return {"HOSTNAME": spec.hostname or spec.name, **spec.confinement.environment}
