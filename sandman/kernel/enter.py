"""Run a command inside a running sandbox: its namespaces, root, cgroup, user and capabilities.

The `exec` client is a host process, root, entering a sandbox whose processes are not trusted; the
path is built so that the sandbox never sees a process that is more than itself:
1. The client forks the entering child, which at once holds only its stdio (none of it a host
   terminal, see kernel/terminal.py), the namespace fds and the pty socket, makes itself
   non-dumpable and dies with the client (PR_SET_PDEATHSIG).
2. It joins the sandbox's cgroup and then its namespaces, user first (it owns the others).
   Joining a pid namespace only places the *children* there: the entering child itself is in no
   pid namespace the sandbox can see, so no process of the sandbox can name it.
3. Still invisible, it takes the sandbox's confinement: the seccomp filter and bounding set, the
   unit's user, the capability sets, no_new_privs. With `-t` it then opens the sandbox's pty.
4. Only then it forks the command's process, which is born inside the pid namespace already
   confined: a sandbox that may ptrace (CAP_SYS_PTRACE) can attach to nothing with more
   privileges than its own, and that process runs the sealed copy of the interpreter (see
   sealed.py), so its /proc/PID/exe leads to no host file. It takes a session of its own, its
   terminal, and execs the command; the entering child relays signals and the exit status.
Both stay non-dumpable until the exec (fork keeps the flag; the exec of the command resets it
as the kernel decides), so /proc/PID/mem, fd, environ are closed to a sandbox without
CAP_SYS_PTRACE in the host's user namespace.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import termios
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sandman.kernel import pty
from sandman.kernel import syscalls as sc

if TYPE_CHECKING:
    from sandman.kernel.security import Confinement

# Order matters: user first (it owns the others), mnt before the rest resolves no more paths.
_ORDER = (
    ("user", sc.CLONE_NEWUSER),
    ("mnt", sc.CLONE_NEWNS),
    ("uts", sc.CLONE_NEWUTS),
    ("ipc", sc.CLONE_NEWIPC),
    ("net", sc.CLONE_NEWNET),
    ("cgroup", sc.CLONE_NEWCGROUP),
    ("time", sc.CLONE_NEWTIME),
    ("pid", sc.CLONE_NEWPID),
)

# What the client and the entering child pass on to the command; SIGKILL needs no relay.
FORWARDED = (
    signal.SIGHUP,
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGTERM,
    signal.SIGUSR1,
    signal.SIGUSR2,
)


@dataclass(frozen=True)
class EnterSpec:
    """What `exec` needs to run a command inside a running sandbox."""

    pid: int
    command: tuple[str, ...]
    confinement: Confinement  # the init's (apply/confinement.py)
    term: str = "dumb"  # the client's TERM, under the unit's environment
    join_cgroup: Callable[[int], None] | None = None
    # The command's argv[0] when not command[0]: "-sh" makes a login shell, as login(1) does.
    argv0: str | None = None


@dataclass(frozen=True)
class Stdio:
    """The entering child's fds 0, 1, 2 (never a host terminal); with `pty_socket`, the child
    replaces them with a pty of the sandbox and sends its master back through that socket."""

    fds: tuple[int, int, int]
    pty_socket: int | None = None
    winsize: bytes | None = None
    # The OCI runtime's way (sandman-oci exec): the master goes to `pty_socket` as the console
    # socket protocol says (the pty's name and the fd in one message), not sandman's own.
    oci_console: bool = False
    # A pipe's write end: the command's host PID is written there once it is forked.
    pid_pipe: int | None = None
    # Detached (OCI `exec --detach`): the command does not die with the client and nothing
    # relays to it; the entering child exits once it is forked, so the command is reparented to
    # the client's subreaper (conmon, the containerd shim), which waits for it.
    detached: bool = False


def start_inside(spec: EnterSpec, stdio: Stdio) -> int:
    """Fork the entering child; its PID. It exits with the command's exit code."""
    namespaces = _open_namespaces(spec.pid)
    root = -1 if any(f == sc.CLONE_NEWNS for _, f in namespaces) else _open_chroot(spec.pid)
    client = os.getpid()
    try:
        child = os.fork()
        if child == 0:
            _entering_child(spec, stdio, namespaces, client, root)
    finally:
        for fd in [fd for fd, _ in namespaces] + ([root] if root >= 0 else []):
            os.close(fd)
    return child


def exit_code(status: int) -> int:
    """A wait status as a shell shows it: 128 + N when killed by signal N."""
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 128 + os.WTERMSIG(status)


def _open_namespaces(pid: int) -> list[tuple[int, int]]:
    """fds of the init's namespaces that differ from ours, in joining order."""
    opened = []
    for name, flag in _ORDER:
        path = f"/proc/{pid}/ns/{name}"
        try:
            theirs = os.stat(path).st_ino
        except FileNotFoundError:
            continue
        if theirs != os.stat(f"/proc/self/ns/{name}").st_ino:
            opened.append((os.open(path, os.O_RDONLY | os.O_CLOEXEC), flag))
    return opened


def _open_chroot(pid: int) -> int:
    """The init's root when it shares our mount namespace yet not our root (an OCI config
    without a mount namespace: its root is a chroot in the caller's), as an fd; else -1. The
    command is chrooted there as the init was; nothing else places it in the sandbox's files."""
    theirs = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    found, ours = os.fstat(theirs), os.stat("/")
    if (found.st_dev, found.st_ino) == (ours.st_dev, ours.st_ino):
        os.close(theirs)
        return -1
    return theirs


def _entering_child(
    spec: EnterSpec, stdio: Stdio, namespaces: list[tuple[int, int]], client: int, root: int
) -> None:
    code = 126
    channel = stdio.pty_socket  # where errors go until the pty is made (fd 2 is /dev/null)
    try:
        for target, fd in enumerate(stdio.fds):
            os.dup2(fd, target)
        keep = [fd for fd, _ in namespaces] + ([channel] if channel else []) + [root]
        sc.close_fds_except(keep + ([stdio.pid_pipe] if stdio.pid_pipe is not None else []))
        sc.prctl(sc.PR_SET_DUMPABLE, 0)  # before the first setns, until the command's exec
        if not stdio.detached:
            _die_with(client)
        if spec.join_cgroup is not None:
            spec.join_cgroup(os.getpid())
        for fd, flag in namespaces:
            sc.setns(fd, flag)
            os.close(fd)
        if root >= 0:
            os.fchdir(root)
            os.chroot(".")
            os.close(root)
        _confine(spec)
        if not stdio.detached:
            _die_with(client)  # a change of ids clears the parent-death signal
        if channel is not None:
            _take_pty(channel, stdio.winsize, stdio.oci_console)
            os.close(channel)
            channel = None
        code = _run_command(spec, stdio)
    except OSError as exc:
        _say(channel, f"sandman exec: {exc}")
    finally:
        os._exit(code)


def _die_with(parent: int) -> None:
    """SIGKILL when `parent` exits; if it already has, exit now (it was before the prctl)."""
    sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(128 + signal.SIGKILL)


def _confine(spec: EnterSpec) -> None:
    """The sandbox's confinement, in the init's order (see spawn.py), and non-dumpable again."""
    os.chdir(spec.confinement.working_directory)  # as root of the namespace, as the init does
    spec.confinement.take()
    sc.prctl(sc.PR_SET_DUMPABLE, 0)


def _take_pty(sock: int, winsize: bytes | None, oci_console: bool) -> None:
    try:
        master, slave = pty.open_inside(winsize)
    except OSError as exc:
        message = f"cannot open the sandbox's terminal: {exc.strerror}"
        raise OSError(exc.errno, message, exc.filename) from exc
    try:
        (pty.send_console if oci_console else pty.send_master)(sock, master)
    finally:
        os.close(master)
    for target in (0, 1, 2):
        os.dup2(slave, target)
    os.close(slave)


def _run_command(spec: EnterSpec, stdio: Stdio) -> int:
    """Fork the command's process into the sandbox's pid namespace; relay signals to it until
    it ends, and return its exit code (detached: return at once)."""
    me = os.getpid()
    child = os.fork()
    if child == 0:
        _exec_command(spec, None if stdio.detached else me, stdio.pty_socket is not None)
    if stdio.pid_pipe is not None:
        os.write(stdio.pid_pipe, f"{child}\n".encode())
        os.close(stdio.pid_pipe)
    if stdio.detached:
        return 0
    # The command's stdio is its own now: the client sees EOF when the command (and whatever it
    # left running) closes them, not when this process does.
    for fd in (0, 1, 2):
        os.close(fd)
    for signum in FORWARDED:
        signal.signal(signum, lambda received, _: _signal(child, received))
    # Waited without reaping, then reaped with the relay blocked: a signal relayed after the
    # reap could reach a process that reused the PID.
    os.waitid(os.P_PID, child, os.WEXITED | os.WNOWAIT)
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARDED)
    _, status = os.waitpid(child, 0)
    return exit_code(status)


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


def _exec_command(spec: EnterSpec, parent: int | None, tty: bool) -> None:
    """PARENT: the entering child it dies with; None when detached."""
    try:
        if parent is not None:
            sc.prctl(sc.PR_SET_PDEATHSIG, signal.SIGKILL)
            # The parent sits outside the sandbox's pid namespace: 0 here, unless the sandbox
            # shares the host's. Anything else means it died before the prctl and the child
            # was reparented.
            if os.getppid() not in (0, parent):
                os._exit(128 + signal.SIGKILL)
        sc.close_fds_except(())
        os.setsid()  # never the caller's session: no terminal of the host is ever its own
        if tty:
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        # Python ignores SIGPIPE and SIGXFSZ, and ignored signals survive exec.
        for signum in (signal.SIGPIPE, signal.SIGXFSZ):
            signal.signal(signum, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, ())
        environment = {"TERM": spec.term, **spec.confinement.environment}
        argv = [spec.argv0 or spec.command[0], *spec.command[1:]]
        os.execvpe(spec.command[0], argv, environment)
    except FileNotFoundError:
        os.write(2, f"sandman exec: {spec.command[0]}: not found in the sandbox\n".encode())
        os._exit(127)
    except OSError as exc:
        os.write(2, f"sandman exec: {exc}\n".encode())
    os._exit(126)


def _say(channel: int | None, message: str) -> None:
    """An error of the entering child: to the client over the pty socket while there is one,
    else to its stderr."""
    with contextlib.suppress(OSError):
        if channel is not None:
            pty.send_error(channel, message)
        else:
            os.write(2, f"{message}\n".encode())
