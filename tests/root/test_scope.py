"""The holder of an instance's systemd scope (sandman.kernel.scope), on the host's real cgroup v2
hierarchy, as root. systemd's part (StartTransientUnit: make the scope's cgroup and move the
holder into it; remove it once empty) is played by the test, as the hosts that run the suite
have no systemd; tests/vm/service_boot.py runs the whole path under a booted systemd.
"""

from __future__ import annotations

import os
import secrets
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from sandman.kernel import scope, systemd

# The v2 hierarchy: the root on a pure v2 host, `unified` on a hybrid one (no controllers there,
# but processes move as they do under systemd).
V2_ROOT = next(
    (
        p
        for p in ("/sys/fs/cgroup", "/sys/fs/cgroup/unified")
        if os.path.isfile(f"{p}/cgroup.procs")
    ),
    "",
)

pytestmark = pytest.mark.skipif(not V2_ROOT, reason="no cgroup v2 hierarchy on this host")


@pytest.fixture
def base(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A slice/scope pair unique to the test; systemd's StartTransientUnit played by the test.
    The teardown fails the test if a holder or a cgroup is left, after removing them."""
    slice_dir = f"sandman-test-{secrets.token_hex(4)}.slice"
    calls: list[tuple[str, Sequence[int], dict[str, Any]]] = []

    def start_scope(unit: str, pids: Sequence[int], properties: Sequence[Any]) -> None:
        calls.append((unit, pids, {name: value for name, _sig, value in properties}))
        top = Path(V2_ROOT, slice_dir, unit)
        top.mkdir(parents=True)
        for pid in pids:
            (top / "cgroup.procs").write_text(str(pid))

    monkeypatch.setattr(systemd, "start_scope", start_scope)
    monkeypatch.setattr(scope, "_RELEASE_WAIT", 2.0)  # the fake never removes the scope
    base = f"{slice_dir}/sandman-t.scope"
    base_calls[base] = calls
    yield base
    scope.release(V2_ROOT, base)  # what apply does when the instance is left with nothing
    left = Path(V2_ROOT, slice_dir)
    holders = scope_pids(left)
    for pid in holders:
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while scope_pids(left) and time.monotonic() < deadline:  # a killed one exits, then leaves
        time.sleep(0.02)
    for directory in sorted((p for p in left.rglob("*") if p.is_dir()), reverse=True):
        directory.rmdir()
    if left.exists():
        left.rmdir()
    assert not holders, f"holders left running: {holders}"


base_calls: dict[str, list[tuple[str, Sequence[int], dict[str, Any]]]] = {}


def scope_pids(top: Path) -> list[int]:
    if not top.exists():
        return []
    return [int(p) for f in top.rglob("cgroup.procs") for p in f.read_text().split()]


def test_a_holder_founds_the_scope_then_moves_to_its_own_leaf(base: str) -> None:
    assert scope.ensure(V2_ROOT, base, "sandman: test")
    ((unit, pids, properties),) = base_calls[base]
    assert unit == "sandman-t.scope"
    assert properties["Delegate"] is True and properties["Slice"] == os.path.dirname(base)
    assert "After" not in properties  # an order after the service would deadlock its start
    holder = pids[0]
    top = Path(V2_ROOT, base)
    # From outside: the scope's top holds no process (v2 lets it enable controllers), the leaf
    # holds the holder, which is no child of ours (a daemon need not reap it).
    assert (top / "cgroup.procs").read_text().split() == []
    assert (top / scope.HOLDER / "cgroup.procs").read_text().split() == [str(holder)]
    assert wait_for_comm(holder) == scope.HOLDER_NAME  # once its interpreter started
    status = Path(f"/proc/{holder}/status").read_text()
    assert f"PPid:\t{os.getpid()}\n" not in status
    # From inside: the holder sees only /dev/null on its stdio and no fd of ours.
    fds = os.listdir(f"/proc/{holder}/fd")
    assert sorted(fds) == ["0", "1", "2"], fds
    assert {os.readlink(f"/proc/{holder}/fd/{fd}") for fd in fds} == {"/dev/null"}
    assert (top / scope.HOLDER).is_dir()
    assert not scope.ensure(V2_ROOT, base, "sandman: test")  # there: nothing made again
    assert len(base_calls[base]) == 1


def test_release_ends_the_holder(base: str) -> None:
    scope.ensure(V2_ROOT, base, "sandman: test")
    holder = base_calls[base][0][1][0]
    scope.release(V2_ROOT, base)
    # The holder was reparented away from us: it is gone once it no longer shows in the leaf.
    leaf = Path(V2_ROOT, base, scope.HOLDER, "cgroup.procs")
    assert str(holder) not in leaf.read_text().split()
    assert gone(holder)


def test_a_refused_scope_leaves_no_holder(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[int] = []

    def refuse(unit: str, pids: Sequence[int], properties: Sequence[Any]) -> None:
        started.extend(pids)
        raise systemd.SystemdError("systemd refused: org.freedesktop.DBus.Error.AccessDenied")

    monkeypatch.setattr(systemd, "start_scope", refuse)
    with pytest.raises(systemd.SystemdError, match="AccessDenied"):
        scope.ensure(V2_ROOT, base, "sandman: test")
    assert not Path(V2_ROOT, base).exists()
    assert gone(started[0])


def wait_for_comm(pid: int) -> str:
    deadline = time.monotonic() + 10
    comm = ""
    while time.monotonic() < deadline:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
        if comm == scope.HOLDER_NAME:
            break
        time.sleep(0.02)
    return comm


def gone(pid: int) -> bool:
    """Dead within a few seconds (a zombie until init reaps it counts as dead)."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if "State:\tZ" in Path(f"/proc/{pid}/status").read_text():
                return True
        except (FileNotFoundError, ProcessLookupError):
            # Reaped between the lookup and the read: the directory was still there.
            return True
        time.sleep(0.02)
    return False
