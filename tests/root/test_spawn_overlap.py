"""Overlapping creates (issue #22): apply starts up to 8 sandboxes before it finishes any, and
that must never hang, whatever order the children run in, and never let one create's children
hold another's pipes, apply's lock or its netlink sockets.

Each test drives `sandman apply` as a user does, on the `lab` of test_networks.py (a private
instance and subnet, checked clean afterwards). The order of the children is forced with
SANDMAN_FAULT_PAUSE (a chosen child sleeps at a chosen spawn step), a prepare step is made to
fail with SANDMAN_FAULT_FAIL, and CPU-bound processes compete with the children. What each child
holds is read from outside, in /proc/PID/fd, while it waits.

No assertion is about time: the subprocess timeout of `Sandman.run` is the bound, a hang fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_networks as networks
import test_sandboxes as base
from test_networks import Lab, lab, network_unit, sandbox_unit
from test_sandboxes import instance_processes

pytestmark = pytest.mark.root

busybox_image = base.busybox_image
__all__ = ["busybox_image", "lab"]  # fixtures, used by name

MANY = 60
FEW = 12
WINDOW = 8  # the applier's CREATE_WINDOW: the slow one and the 7 started after it
_PIPE = re.compile(r"pipe:\[(\d+)\]")
_libc = ctypes.CDLL(None, use_errno=True)
_PIDFD_GETFD = 438  # the same number on every architecture since 5.6
_SIOCGSKNS = 0x894C  # a socket's network namespace, as a new fd


@contextlib.contextmanager
def cpu_hogs(count: int = 2) -> Iterator[None]:
    """Busy loops on every core while the block runs, so that the children are scheduled late
    and in no fixed order. Each ends itself after 300 s should this process die first."""
    script = "import time\nend = time.monotonic() + 300\nwhile time.monotonic() < end: pass\n"
    hogs = [
        subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.DEVNULL)
        for _ in range(count)
    ]
    try:
        yield
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def write_world(lab: Lab, count: int) -> list[str]:
    """A network and `count` sandboxes on it; every fourth forwards a host port."""
    lab.sm.write("net", network_unit(lab.subnet), kind="network")
    names = [f"n{i:02d}" for i in range(count)]
    for i, name in enumerate(names):
        ports = [{"host": networks.free_port(), "sandbox": 80}] if i % 4 == 0 else []
        lab.sm.write(name, sandbox_unit("net", ports=ports))
    return names


def assert_all_run(lab: Lab, names: list[str]) -> None:
    states = {s["name"]: s["state"] for s in lab.sm.status()["sandboxes"]}
    assert states == dict.fromkeys(names, "running"), states


def test_many_creates_overlapping_under_load_all_run(lab: Lab) -> None:
    names = write_world(lab, MANY)
    with cpu_hogs():
        for _ in range(2):
            lab.sm.apply()
            assert_all_run(lab, names)
            for name in names:
                assert_holds_only_its_own(lab, name, lab.sm.running_init(name))
            lab.sm.destroy(str(lab.sm.units))


def test_children_waiting_behind_a_slow_create_hold_nothing_of_the_others(lab: Lab) -> None:
    """n00's init pauses before it takes its identity, so apply waits on it while the next
    seven creates' children have run ahead and wait for apply: their fds are read then."""
    names = write_world(lab, FEW)
    pause = {"SANDMAN_FAULT_PAUSE": "sandbox/n00@identity=4"}
    argv = lab.sm.argv("apply", str(lab.sm.units))
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SANDMAN_")}
    apply = subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**environment, **pause},
    )
    seen: dict[int, str] = {}
    try:
        with cpu_hogs():
            deadline = time.monotonic() + 120  # a guard against hanging
            while time.monotonic() < deadline and apply.poll() is None:
                seen |= snapshot_and_check(lab)
                assert_close_on_exec(apply.pid)
                time.sleep(0.02)
        assert apply.wait(timeout=10) == 0
    finally:
        if apply.poll() is None:
            apply.kill()
            apply.wait()
    lab.sm.note_records()
    waiting = {sandbox for sandbox in seen.values() if sandbox != "n00"}
    assert len(waiting) >= WINDOW - 2, f"too few children seen waiting: {sorted(waiting)}"
    assert_all_run(lab, names)


def snapshot_and_check(lab: Lab) -> dict[int, str]:
    """Every process in the instance's cgroups now: no socket but its own, not apply's lock, and
    no pipe that a process of another sandbox holds too. PID -> sandbox name."""
    owners: dict[int, str] = {}  # pipe inode -> sandbox
    found = {}
    for pid, paths in instance_processes(lab.sm.base).items():
        name = sandbox_of(paths)
        if name is None:
            continue
        found[pid] = name
        for inode in pipes_of(pid):
            assert owners.setdefault(inode, name) == name, (
                f"pipe {inode} is held by processes of {owners[inode]} and of {name}"
            )
        own = own_sockets(pid)
        for fd, target in fds_of(pid):
            if target.startswith("socket:") and target not in own:
                raise AssertionError(f"{name} pid {pid} holds fd {fd}: {target}")
            assert not target.endswith("/lock"), f"{name} pid {pid} holds apply's lock"
    return found


def own_sockets(pid: int) -> set[str]:
    """The sockets a process holds that belong to a network namespace other than the host's: the
    init briefly holds the datagram socket that brings its own `lo` up. Any socket of the host's
    namespace can only have come from apply. A socket's namespace is asked of a copy of it
    (pidfd_getfd, then SIOCGSKNS)."""
    host = os.stat("/proc/self/ns/net").st_ino
    own: set[str] = set()
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return own
    try:
        for fd, target in fds_of(pid):
            if target.startswith("socket:") and _namespace_of(pidfd, fd) not in (host, None):
                own.add(target)
    finally:
        os.close(pidfd)
    return own


def _namespace_of(pidfd: int, fd: int) -> int | None:
    """The inode of the network namespace of socket `fd` of the process, None once it is gone."""
    copy = _libc.syscall(_PIDFD_GETFD, pidfd, fd, 0)
    if copy < 0:
        return None
    try:
        namespace = fcntl.ioctl(copy, _SIOCGSKNS)
        try:
            return os.fstat(namespace).st_ino
        finally:
            os.close(namespace)
    finally:
        os.close(copy)


def assert_close_on_exec(pid: int) -> None:
    """Every fd above 2 of the process is close-on-exec (O_CLOEXEC in its fdinfo flags)."""
    for fd, target in fds_of(pid):
        with contextlib.suppress(FileNotFoundError):
            info = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
            flags = int(re.search(r"^flags:\s*(\d+)", info, re.M)[1], 8)  # type: ignore[index]
            assert flags & os.O_CLOEXEC, f"apply's fd {fd} ({target}) is not close-on-exec"


def sandbox_of(paths: set[str]) -> str | None:
    for path in paths:
        parts = path.strip("/").split("/")
        if len(parts) >= 2:
            return parts[-1]
    return None


def fds_of(pid: int) -> list[tuple[int, str]]:
    """(fd, link target) above 2; a process gone meanwhile has none."""
    found = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for entry in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(FileNotFoundError):
                if int(entry) > 2:
                    found.append((int(entry), os.readlink(f"/proc/{pid}/fd/{entry}")))
    return found


def pipes_of(pid: int) -> set[int]:
    return {int(m[1]) for _, target in fds_of(pid) if (m := _PIPE.fullmatch(target))}


def assert_holds_only_its_own(lab: Lab, name: str, pid: int) -> None:
    """A running init holds stdio and nothing above: no pipe, socket or file of sandman's."""
    left = fds_of(pid)
    assert left == [], f"the init of {name} holds {left}"
    stdio = [os.readlink(f"/proc/{pid}/fd/{fd}") for fd in (1, 2)]
    assert stdio == [str(lab.sm.log_dir / f"{name}.log")] * 2, stdio


def test_a_failed_network_prepare_fails_that_create_alone(lab: Lab) -> None:
    """The init waits for apply's go-ahead; when the prepare step fails, it must be told (before,
    apply went on reading its report pipe while the init waited: a hang)."""
    names = write_world(lab, FEW)
    fault = {"SANDMAN_FAULT_FAIL": "sandbox/n03: veth made"}
    with cpu_hogs():
        result = lab.sm.run("apply", str(lab.sm.units), expect=1, env=fault)
    lab.sm.note_records()
    assert "sandbox/n03" in result.err and "network" in result.err, result
    assert "fault injected" in result.err, result
    states = {s["name"]: s["state"] for s in lab.sm.status()["sandboxes"]}
    assert "n03" not in states and all(states[n] == "running" for n in names if n != "n03")
    assert lab.sm.gone("n03") == []
    lab.sm.apply()
    assert_all_run(lab, names)


@pytest.mark.parametrize("where", ["n00@inside", "n02@cgroup", "n05@rootfs"])
def test_a_create_that_makes_no_progress_is_killed_and_the_others_run(lab: Lab, where: str) -> None:
    names = write_world(lab, FEW)
    slow, _, _ = where.partition("@")
    env = {"SANDMAN_SPAWN_TIMEOUT": "2", "SANDMAN_FAULT_PAUSE": f"sandbox/{where}=60"}
    with cpu_hogs(1):
        result = lab.sm.run("apply", str(lab.sm.units), expect=1, env=env)
    lab.sm.note_records()
    assert f"sandbox/{slow}" in result.err and "no progress for 2 s while" in result.err, result
    assert lab.sm.gone(slow) == []
    states = {s["name"]: s["state"] for s in lab.sm.status()["sandboxes"]}
    assert all(states[n] == "running" for n in names if n != slow), states
    lab.sm.apply()
    assert_all_run(lab, names)
