"""What a sandbox gets when its unit says nothing, how "max" lifts a default, and how a default
that changed is planned for a sandbox applied before it."""

from __future__ import annotations

import pathlib

from sandman.observe.facts import ActualState
from sandman.observe.records import record_of
from sandman.plan.diff import plan
from sandman.plan.keys import is_live
from sandman.units.constants import DEFAULT_PIDS_MAX, DEFAULT_SHM_SIZE
from sandman.units.model import SandboxUnit, SliceUnit
from sandman.units.read import read_units

TAG = "smt"


def _resources(table: dict[str, object]) -> SandboxUnit:
    return SandboxUnit.model_validate({"sandbox": {"command": ["/bin/true"]}, "resources": table})


def test_a_sandbox_is_bounded_by_default() -> None:
    resources = SandboxUnit.model_validate({"sandbox": {"command": ["/bin/true"]}}).resources
    assert resources.pids_max == DEFAULT_PIDS_MAX == 4096
    assert resources.shm_bytes() == DEFAULT_SHM_SIZE == 64 * 1024**2
    assert resources.memory_max is None and resources.memory_high is None


def test_max_lifts_each_default() -> None:
    resources = _resources({"pids_max": "max", "shm_size": "max"}).resources
    assert resources.pids_max is None  # the cgroup drivers write "max" for None
    assert resources.shm_bytes() is None  # no size= option: the kernel's tmpfs default
    assert _resources({"pids_max": 100, "shm_size": "1G"}).resources.shm_bytes() == 1024**3


def test_a_slice_stays_unbounded_by_default_and_takes_max() -> None:
    assert SliceUnit.model_validate({"slice": {}}).slice.pids_max is None
    assert SliceUnit.model_validate({"slice": {"pids_max": "max"}}).slice.pids_max is None


def test_shm_size_needs_a_recreate_and_pids_max_does_not() -> None:
    assert is_live("sandbox", "resources.pids_max")
    assert not is_live("sandbox", "resources.shm_size")


def test_a_sandbox_applied_before_the_defaults_gets_its_pid_limit_live(
    tmp_path: pathlib.Path,
) -> None:
    """A record written before the defaults existed: `pids_max` null, no `shm_size` key. The
    plan updates the PID limit in place and does not recreate the sandbox for /dev/shm."""
    (tmp_path / "web.sandbox.toml").write_text('[sandbox]\ncommand = ["/bin/httpd"]\n')
    desired = read_units(str(tmp_path), TAG)
    old = desired.sandboxes["web"].canonical()
    old["resources"] = {k: None for k in old["resources"] if k != "shm_size"}
    actual = ActualState(records={("sandbox", "web"): record_of("sandbox", "web", old)}, drift={})
    (action,) = plan(desired, actual).actions
    assert action.lines() == [
        "~ sandbox/web: update in place (resources.pids_max)",
        "    resources.pids_max: (unset) -> 4096",
    ]


def test_the_syscall_lists_need_a_recreate() -> None:
    """The filter is loaded by the init before it execs: no running process takes a new one."""
    for key in ("security.seccomp", "security.syscalls_allow", "security.syscalls_deny"):
        assert not is_live("sandbox", key), key


def test_a_sandbox_applied_before_the_syscall_lists_is_left_as_it_is(
    tmp_path: pathlib.Path,
) -> None:
    """A record written before `syscalls_allow` and `syscalls_deny` existed has neither key: a
    unit that sets neither plans nothing for them."""
    (tmp_path / "web.sandbox.toml").write_text('[sandbox]\ncommand = ["/bin/httpd"]\n')
    desired = read_units(str(tmp_path), TAG)
    old = desired.sandboxes["web"].canonical()
    old["security"] = {k: v for k, v in old["security"].items() if not k.startswith("syscalls_")}
    actual = ActualState(records={("sandbox", "web"): record_of("sandbox", "web", old)}, drift={})
    assert plan(desired, actual).actions == ()
