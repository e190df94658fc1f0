"""Run a command inside a running sandbox: its namespaces, root, cgroup, user and capabilities.

A first child joins the cgroup and then the namespaces (the user namespace first, so that it may
join the ones that namespace owns); joining a pid namespace only places its children there, so a
second child execs the command and the first relays its exit status.
"""

from __future__ import annotations

import fcntl
import os
import termios
from collections.abc import Callable
from dataclasses import dataclass, field

from sandman.kernel import syscalls as sc

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


@dataclass(frozen=True)
class EnterSpec:
    """What `exec` needs to run a command inside a running sandbox."""

    pid: int
    command: tuple[str, ...]
    environment: dict[str, str]
    uid: int = 0
    gid: int = 0
    working_directory: str = "/"
    join_cgroup: Callable[[int], None] | None = None
    setup_inside: tuple[Callable[[], None], ...] = field(default=())  # before the user switch
    finish_inside: tuple[Callable[[], None], ...] = field(default=())  # after it
    stdio: tuple[int, int, int] | None = None  # fds for 0, 1, 2 (a pty); None: inherit
    new_session: bool = False


def run_inside(spec: EnterSpec) -> int:
    """Run the command in the sandbox; return its exit code (128 + N when killed by signal N)."""
    return wait_exit(start_inside(spec))


def start_inside(spec: EnterSpec) -> int:
    namespaces = _open_namespaces(spec.pid)
    try:
        child = os.fork()
        if child == 0:
            _join_and_run(spec, namespaces)
    finally:
        for fd, _ in namespaces:
            os.close(fd)
    return child


def wait_exit(child: int) -> int:
    _, status = os.waitpid(child, 0)
    return _exit_code(status)


def _exit_code(status: int) -> int:
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


def _join_and_run(spec: EnterSpec, namespaces: list[tuple[int, int]]) -> None:
    code = 126
    try:
        if spec.join_cgroup is not None:
            spec.join_cgroup(os.getpid())
        for fd, flag in namespaces:
            sc.setns(fd, flag)
        grandchild = os.fork()
        if grandchild == 0:
            _exec(spec)
        _, status = os.waitpid(grandchild, 0)
        code = _exit_code(status)
    except OSError as exc:
        os.write(2, f"sandman exec: {exc}\n".encode())
    finally:
        os._exit(code)


def _exec(spec: EnterSpec) -> None:
    try:
        if spec.new_session:
            os.setsid()
        if spec.stdio is not None:
            for target, fd in enumerate(spec.stdio):
                os.dup2(fd, target)
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        os.chdir(spec.working_directory)
        for setup in spec.setup_inside:
            setup()
        os.setgroups([])
        os.setresgid(spec.gid, spec.gid, spec.gid)
        os.setresuid(spec.uid, spec.uid, spec.uid)
        for finish in spec.finish_inside:
            finish()
        sc.close_range(3, sc.FD_LAST, sc.CLOSE_RANGE_CLOEXEC)
        os.execvpe(spec.command[0], list(spec.command), spec.environment)
    except FileNotFoundError:
        os.write(2, f"sandman exec: {spec.command[0]}: not found in the sandbox\n".encode())
        os._exit(127)
    except OSError as exc:
        os.write(2, f"sandman exec: {exc}\n".encode())
    os._exit(126)
