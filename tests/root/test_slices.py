"""Resource slices and sandbox limits against the real kernel, as root: the cgroup files hold what
the units declare (sandboxes and nested slices), the kernel enforces it (pids, memory, CPU), drift
written by hand is planned and repaired without touching the init, nothing escapes `destroy`, and
slice moves and removals take the cgroup tree along.

sandman is driven through `python -m sandman` with the `sm` fixture of test_sandboxes.py, whose
teardown also fails a test that leaves a process, a cgroup or a record behind. The cgroup files
are read and written here directly, without sandman's driver, so the tests do not check sandman
against itself. Expected file contents follow the mappings of README.md and
sandman/kernel/cgroup_v1.py (cpu.shares = weight * 1024 / 100; io weights piecewise linear onto
CFQ's 10..500..1000 or BFQ's 1..100..1000), written out as numbers.

On a v1 or hybrid host (v1 controllers) a cgroup is `/sys/fs/cgroup/CONTROLLER/REL`; on a pure
v2 host `/sys/fs/cgroup/REL`. No assertion is about time: the polls are bounded guards only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
from test_sandboxes import (
    WAIT,
    Sandman,
    alive,
    busybox_image,
    cgroup_dirs,
    processes_in_cgroup,
    sm,
    unit,
    wait_for,
)

__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

CGROUP_ROOT = "/sys/fs/cgroup"
V2 = os.path.isfile(os.path.join(CGROUP_ROOT, "cgroup.controllers"))
MiB = 1 << 20
SANDBOX_PIDS_MAX = 4096  # a sandbox's default pids_max (README); a slice has no default limit
PAGE = os.sysconf("SC_PAGE_SIZE")
V1_NO_MEMORY_LIMIT = str((2**63 - 1) // PAGE * PAGE)  # PAGE_COUNTER_MAX pages, as v1 shows it

# Weights of the units (1..10000, default 100) and what v1 and v2 files hold for them.
SHARES = {50: "512", 100: "1024", 200: "2048", 300: "3072"}  # cpu.shares = weight * 1024 / 100
CFQ_WEIGHT = {100: 500, 200: 505, 300: 510}  # blkio.weight: 100 -> 500, 10000 -> 1000
BFQ_WEIGHT = {100: 100, 200: 109, 300: 118}  # blkio.bfq.weight: 100 -> 100, 10000 -> 1000

Files = dict[tuple[str, str], str]


# ---------------------------------------------------------------------------------------------
# The kernel's cgroup files, read without sandman


def cgroup_file(controller: str, rel: str, name: str) -> Path:
    if V2:
        return Path(CGROUP_ROOT, rel, name)
    return Path(CGROUP_ROOT, controller, rel, name)


def read_cgroup(controller: str, rel: str, name: str) -> str:
    return cgroup_file(controller, rel, name).read_text().strip()


def keyed(text: str) -> dict[str, int]:
    """`key value` lines (cpu.stat, memory.oom_control, pids.events) as a dict."""
    found = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            found[parts[0]] = int(parts[1])
    return found


def stat_of_cgroup(controller: str, rel: str, name: str) -> dict[str, int]:
    return keyed(read_cgroup(controller, rel, name))


def limit_files(
    *,
    memory_max: int | None = None,
    memory_high: int | None = None,
    cpu_percent: int | None = None,
    cpu_weight: int | None = None,
    pids_max: int | None = None,
) -> Files:
    """(controller, file) -> the text the kernel must show for these limits (None: no limit)."""
    pids = "max" if pids_max is None else str(pids_max)
    if V2:
        quota = "max" if cpu_percent is None else str(cpu_percent * 1000)
        return {
            ("memory", "memory.max"): "max" if memory_max is None else str(memory_max),
            ("memory", "memory.high"): "max" if memory_high is None else str(memory_high),
            ("cpu", "cpu.max"): f"{quota} 100000",
            ("cpu", "cpu.weight"): str(100 if cpu_weight is None else cpu_weight),
            ("pids", "pids.max"): pids,
        }
    return {
        ("memory", "memory.limit_in_bytes"): (
            V1_NO_MEMORY_LIMIT if memory_max is None else str(memory_max)
        ),
        ("memory", "memory.soft_limit_in_bytes"): (
            V1_NO_MEMORY_LIMIT if memory_high is None else str(memory_high)
        ),
        ("cpu", "cpu.cfs_quota_us"): "-1" if cpu_percent is None else str(cpu_percent * 1000),
        ("cpu", "cpu.cfs_period_us"): "100000",
        ("cpu", "cpu.shares"): SHARES[100 if cpu_weight is None else cpu_weight],
        ("pids", "pids.max"): pids,
    }


def read_files(rel: str, files: Files) -> Files:
    return {(c, f): read_cgroup(c, rel, f) for c, f in files}


def io_weight_file(rel: str) -> tuple[Path, dict[int, int]] | None:
    """The io weight file of the cgroup and the table of expected values, None when this
    kernel has no proportional I/O weight (no blkio.weight, no blkio.bfq.weight, no io.weight)."""
    if V2:
        path = cgroup_file("io", rel, "io.weight")
        return (path, {w: w for w in (100, 200, 300)}) if path.exists() else None
    for name, table in (("blkio.weight", CFQ_WEIGHT), ("blkio.bfq.weight", BFQ_WEIGHT)):
        path = cgroup_file("blkio", rel, name)
        if path.exists():
            return path, table
    return None


def io_weight_value(path: Path) -> int:
    """`500`, `default 100` (v2 io.weight, some BFQ kernels), per-device lines after it."""
    first = path.read_text().splitlines()[0].split()
    return int(first[1] if first[0] == "default" else first[0])


def check_io_weight(rel: str, weight: int) -> None:
    found = io_weight_file(rel)
    if found is not None:  # the host has a proportional I/O weight: it holds the unit's
        path, table = found
        assert io_weight_value(path) == table[weight], (path, path.read_text())


# ---------------------------------------------------------------------------------------------
# Units and reports


def slice_unit(parent: str | None = None, **limits: object) -> str:
    lines = ["[slice]"]
    if parent is not None:
        lines.append(f'parent = "{parent}"')
    lines += [f"{key} = {json.dumps(value)}" for key, value in limits.items()]
    return "\n".join(lines) + "\n"


def resources(**limits: object) -> str:
    return "[resources]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in limits.items())


def in_slice(name: str) -> str:
    return f'slice = "{name}"'


def apply_events(result_out: str) -> list[dict[str, Any]]:
    """The per-action events of `apply --json`, in order (the summary object is left out)."""
    return [json.loads(line) for line in result_out.splitlines() if line.startswith('{"time"')]


def slice_status(sm: Sandman, name: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [s for s in sm.status()["slices"] if s["name"] == name]
    assert len(found) == 1, f"status --json lists slice {name!r} {len(found)} times"
    return found[0]


def cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def _log_with(sm: Sandman, name: str, marker: str) -> str | None:
    """The sandbox's log once it holds `marker`, else None."""
    path = sm.log_dir / f"{name}.log"
    text = path.read_text() if path.exists() else ""
    return text if marker in text else None


def start_time(pid: int) -> int:
    text = Path(f"/proc/{pid}/stat").read_text()
    return int(text[text.rindex(")") + 2 :].split()[19])


# The usage fields of `status --json` (README, "JSON for scripts").
USAGE_KEYS = (
    "memory_current",
    "memory_peak",
    "cpu_usec",
    "pids_current",
    "oom_kills",
    "nr_throttled",
)


# ---------------------------------------------------------------------------------------------
# The files hold the declared values


@pytest.mark.root
def test_sandbox_limits_are_in_the_kernel_files(sm: Sandman) -> None:
    sm.write(
        "limited",
        unit(
            rest=resources(
                memory_max="64M",
                memory_high="32M",
                cpu_max="50%",
                cpu_weight=200,
                pids_max=20,
                io_weight=300,
            )
        ),
    )
    sm.write("free", unit())
    sm.apply()
    rel = f"{sm.base}/limited"
    assert sm.runtime("limited")["cgroup"] == rel
    expected = limit_files(
        memory_max=64 * MiB, memory_high=32 * MiB, cpu_percent=50, cpu_weight=200, pids_max=20
    )
    assert read_files(rel, expected) == expected
    check_io_weight(rel, 300)
    # A sandbox without [resources] has no limit but the default pids_max, and default weights.
    unlimited = limit_files(pids_max=SANDBOX_PIDS_MAX)
    assert read_files(f"{sm.base}/free", unlimited) == unlimited
    check_io_weight(f"{sm.base}/free", 100)
    # The init is in that cgroup, in every controller sandman uses.
    pid = sm.running_init("limited")
    controllers = ("memory", "cpu", "pids") if V2 else ("memory", "cpu", "cpuacct", "pids")
    for controller in controllers:
        assert str(pid) in read_cgroup(controller, rel, "cgroup.procs").split(), controller


@pytest.mark.root
def test_nested_slices_and_their_sandbox_hold_their_own_limits(sm: Sandman) -> None:
    """slice a -> slice b -> sandbox w: each level's cgroup has its own unit's limits."""
    sm.write(
        "a", slice_unit(memory_max="256M", cpu_max="150%", cpu_weight=300, pids_max=100), "slice"
    )
    sm.write(
        "b",
        slice_unit(
            "a",
            memory_max="128M",
            memory_high="96M",
            cpu_max="100%",
            cpu_weight=50,
            pids_max=50,
            io_weight=200,
        ),
        "slice",
    )
    sm.write(
        "w",
        unit(
            sandbox=in_slice("b"),
            rest=resources(
                memory_max="64M",
                memory_high="32M",
                cpu_max="50%",
                cpu_weight=200,
                pids_max=20,
                io_weight=300,
            ),
        ),
    )
    sm.apply()
    levels = {
        f"{sm.base}/a": limit_files(
            memory_max=256 * MiB, cpu_percent=150, cpu_weight=300, pids_max=100
        ),
        f"{sm.base}/a/b": limit_files(
            memory_max=128 * MiB,
            memory_high=96 * MiB,
            cpu_percent=100,
            cpu_weight=50,
            pids_max=50,
        ),
        f"{sm.base}/a/b/w": limit_files(
            memory_max=64 * MiB,
            memory_high=32 * MiB,
            cpu_percent=50,
            cpu_weight=200,
            pids_max=20,
        ),
    }
    for rel, expected in levels.items():
        assert read_files(rel, expected) == expected, rel
    check_io_weight(f"{sm.base}/a", 100)
    check_io_weight(f"{sm.base}/a/b", 200)
    check_io_weight(f"{sm.base}/a/b/w", 300)
    assert sm.runtime("w")["cgroup"] == f"{sm.base}/a/b/w"
    pid = sm.running_init("w")
    assert str(pid) in read_cgroup("pids", f"{sm.base}/a/b/w", "cgroup.procs").split()
    # status names the slices with their paths and cgroups.
    report = sm.status()
    slices = {s["name"]: s for s in report["slices"]}
    assert slices["a"]["path"] == "sandman/a" and slices["a"]["cgroup"] == f"{sm.base}/a"
    assert slices["b"]["path"] == "sandman/a/b" and slices["b"]["cgroup"] == f"{sm.base}/a/b"
    (entry,) = report["sandboxes"]
    assert entry["slice"] == "b"


@pytest.mark.root
def test_a_live_limit_change_rewrites_the_files_and_keeps_the_init(sm: Sandman) -> None:
    sm.write("s", slice_unit(cpu_weight=300, pids_max=40), "slice")
    sm.write("w", unit(sandbox=in_slice("s"), rest=resources(memory_max="64M", pids_max=20)))
    sm.apply()
    init = sm.init("w")
    sm.write("s", slice_unit(cpu_weight=50, memory_max="512M"), "slice")
    sm.write("w", unit(sandbox=in_slice("s"), rest=resources(memory_max="48M", cpu_max="30%")))
    plan = sm.run("plan", str(sm.units)).out
    assert "~ slice/s:" in plan and "~ sandbox/w:" in plan, plan
    sm.apply()
    assert sm.init("w") == init and alive(*init)
    slice_files = limit_files(memory_max=512 * MiB, cpu_weight=50)
    assert read_files(f"{sm.base}/s", slice_files) == slice_files
    # pids_max left out of the unit is the default again.
    sandbox_files = limit_files(memory_max=48 * MiB, cpu_percent=30, pids_max=SANDBOX_PIDS_MAX)
    assert read_files(f"{sm.base}/s/w", sandbox_files) == sandbox_files
    assert "No changes" in sm.run("plan", str(sm.units)).out


@pytest.mark.root
def test_lowering_a_slice_and_its_sandbox_cpu_max_together_applies(sm: Sandman) -> None:
    """100% -> 50% for the slice and 80% -> 40% for its sandbox: a consistent state before and
    after. cgroup v1 refuses (EINVAL) a parent quota below a child's, so the child's must be
    lowered first (or the parent's lifted); the order of the writes is sandman's to get right."""
    sm.write("s", slice_unit(cpu_max="100%"), "slice")
    sm.write("w", unit(sandbox=in_slice("s"), rest=resources(cpu_max="80%")))
    sm.apply()
    init = sm.init("w")
    sm.write("s", slice_unit(cpu_max="50%"), "slice")
    sm.write("w", unit(sandbox=in_slice("s"), rest=resources(cpu_max="40%")))
    sm.apply()
    assert sm.init("w") == init and alive(*init)
    assert read_files(f"{sm.base}/s", limit_files(cpu_percent=50)) == limit_files(cpu_percent=50)
    sandbox_files = limit_files(cpu_percent=40, pids_max=SANDBOX_PIDS_MAX)
    assert read_files(f"{sm.base}/s/w", sandbox_files) == sandbox_files
    assert "No changes" in sm.run("plan", str(sm.units)).out


@pytest.mark.root
def test_a_sandbox_cpu_max_above_its_slice_is_refused_or_capped_never_a_failed_apply(
    sm: Sandman,
) -> None:
    """A sandbox asking for 200% in a 50% slice: v2 takes both (the slice caps the sandbox); v1
    refuses a child quota above its parent's. Either the units are refused up front (validate,
    exit 2, nothing touched) or apply succeeds with the slice's cap in force; an apply that
    fails halfway with EINVAL is neither."""
    sm.write("s", slice_unit(cpu_max="50%"), "slice")
    sm.write("w", unit(sandbox=in_slice("s"), rest=resources(cpu_max="200%")))
    validate = sm.run("validate", str(sm.units), expect=None)
    if validate.code == 2:
        assert "cpu_max" in validate.err + validate.out, validate
        sm.apply(expect=2)
        assert cgroup_dirs(sm.base) == []
        return
    assert validate.code == 0, validate
    sm.apply()
    assert read_files(f"{sm.base}/s", limit_files(cpu_percent=50)) == limit_files(cpu_percent=50)
    assert alive(*sm.init("w"))
    assert "No changes" in sm.run("plan", str(sm.units)).out


# ---------------------------------------------------------------------------------------------
# The kernel enforces them


FORK_TWELVE = (
    "(i=0; while [ $i -lt 12 ]; do sleep 1000 & i=$((i+1)); echo forked $i; done); "
    "echo loop ended $?; exec sleep 1000"
)


@pytest.mark.root
def test_pids_max_refuses_forks_beyond_it(sm: Sandman) -> None:
    """pids_max = 5: the init (1) + a subshell (1) + three `sleep`s fill it; the fourth fork of the
    subshell fails with EAGAIN, which busybox reports as "can't fork"."""
    sm.write("forker", unit(command=("sh", "-c", FORK_TWELVE), rest=resources(pids_max=5)))
    sm.apply()
    text = wait_for(lambda: _log_with(sm, "forker", "loop ended"), "the fork loop")
    assert "can't fork" in text or "Resource temporarily unavailable" in text, text
    assert "forked 12" not in text, text
    rel = f"{sm.base}/forker"
    assert read_cgroup("pids", rel, "pids.max") == "5"
    assert int(read_cgroup("pids", rel, "pids.current")) <= 5
    assert stat_of_cgroup("pids", rel, "pids.events").get("max", 0) >= 1  # refused forks
    # exec into the full cgroup is refused: its own process cannot fork in there.
    refused = sm.sh("forker", "true", expect=None)
    assert refused.code != 0, refused
    assert "Resource temporarily unavailable" in refused.err, refused
    assert int(read_cgroup("pids", rel, "pids.current")) <= 5
    usage = sm.status_of("forker")["usage"]
    assert usage["pids_current"] is not None and usage["pids_current"] <= 5, usage


@pytest.mark.root
def test_pids_max_refuses_forks_of_a_command_run_by_exec(sm: Sandman) -> None:
    sm.write("room", unit(rest=resources(pids_max=4)))
    sm.apply()
    loop = "i=0; while [ $i -lt 12 ]; do sleep 1000 >/dev/null 2>&1 & i=$((i+1)); done; wait"
    refused = sm.sh("room", loop, expect=None)
    assert refused.code != 0, refused
    assert "can't fork" in refused.err or "Resource temporarily unavailable" in refused.err, refused
    rel = f"{sm.base}/room"
    assert int(read_cgroup("pids", rel, "pids.current")) <= 4
    assert stat_of_cgroup("pids", rel, "pids.events").get("max", 0) >= 1
    assert sm.status_of("room")["usage"]["pids_current"] <= 4


ALLOCATE_64M = "head -c 67108864 /dev/zero | tail; echo tail exited $?; exec sleep 1000"


@pytest.mark.root
def test_memory_max_oom_kills_what_allocates_past_it(sm: Sandman) -> None:
    """`tail` keeps a line whole in memory: 64 MiB without a newline in an 8 MiB cgroup."""
    sm.write("hungry", unit(command=("sh", "-c", ALLOCATE_64M), rest=resources(memory_max="8M")))
    sm.apply()
    text = wait_for(lambda: _log_with(sm, "hungry", "tail exited"), "tail")
    assert "tail exited 137" in text, text  # 128 + SIGKILL
    rel = f"{sm.base}/hungry"
    if V2:
        assert stat_of_cgroup("memory", rel, "memory.events")["oom_kill"] >= 1
    else:
        assert stat_of_cgroup("memory", rel, "memory.oom_control")["oom_kill"] >= 1
    entry = sm.status_of("hungry")
    assert entry["state"] == "running", entry  # the init itself survived
    usage = entry["usage"]
    assert usage["oom_kills"] is not None and usage["oom_kills"] >= 1, usage
    assert usage["memory_peak"] is not None and usage["memory_peak"] <= 8 * MiB, usage


BUSY = ("sh", "-c", "while :; do :; done")


def _throttled(controller_rel: str) -> int:
    return stat_of_cgroup("cpu", controller_rel, "cpu.stat").get("nr_throttled", 0)


@pytest.mark.root
def test_cpu_max_throttles_a_busy_loop(sm: Sandman) -> None:
    sm.write("busy", unit(command=BUSY, rest=resources(cpu_max="20%")))
    sm.apply()
    rel = f"{sm.base}/busy"
    throttled = wait_for(lambda: _throttled(rel), "nr_throttled > 0 in cpu.stat")
    assert throttled > 0
    usage = wait_for(
        lambda: (u := sm.status_of("busy")["usage"]).get("nr_throttled") and u,
        "nr_throttled > 0 in status --json",
    )
    assert usage["nr_throttled"] > 0 and usage["cpu_usec"] > 0, usage


# The pressure fields of `status --json` (README, "JSON for scripts").
PRESSURE_KEYS = (
    "cpu_some_avg10",
    "memory_some_avg10",
    "memory_full_avg10",
    "io_some_avg10",
    "io_full_avg10",
)


@pytest.mark.root
def test_status_shows_the_pressure_of_a_throttled_sandbox(sm: Sandman) -> None:
    """On pure v2 with PSI on (/proc/pressure exists), the sandbox held to 20% of a CPU shows cpu
    pressure above 0 and a number for every figure, and so does its slice; `show` prints them.
    On v1 and hybrid hosts every figure is null, and `show` says the host keeps none."""
    sm.write("s", slice_unit(), "slice")
    sm.write("busy", unit(command=BUSY, sandbox=in_slice("s"), rest=resources(cpu_max="20%")))
    sm.apply()
    entry = sm.status_of("busy")
    assert set(entry["pressure"]) == set(PRESSURE_KEYS), entry
    shown = sm.run("show", "busy").out
    (line,) = [line for line in shown.splitlines() if line.strip().startswith("Pressure:")]
    if not (V2 and os.path.exists("/proc/pressure/cpu")):
        assert entry["pressure"] == dict.fromkeys(PRESSURE_KEYS), entry
        assert slice_status(sm, "s")["pressure"] == dict.fromkeys(PRESSURE_KEYS)
        assert "not kept by this host" in line, line
        return
    pressure = wait_for(
        lambda: (p := sm.status_of("busy")["pressure"])["cpu_some_avg10"] and p,
        "cpu_some_avg10 > 0 in status --json",
    )
    for key in PRESSURE_KEYS:
        assert isinstance(pressure[key], float) and pressure[key] >= 0, (key, pressure)
    assert pressure["cpu_some_avg10"] > 0, pressure
    slice_pressure = slice_status(sm, "s")["pressure"]
    for key in PRESSURE_KEYS:
        assert isinstance(slice_pressure[key], float), (key, slice_pressure)
    assert re.search(r"cpu \d+\.\d\d%, memory .* \(full .*\), io .* \(full .*\)", line), line


@pytest.mark.root
def test_slice_limits_bind_the_sandboxes_inside_them(sm: Sandman) -> None:
    """Sandboxes without limits of their own are held by their slice's: pids in `few`, CPU in
    `slow`, memory in `outer` through a slice `inner` (no limits) between it and the sandbox."""
    sm.write("few", slice_unit(pids_max=5), "slice")
    sm.write("slow", slice_unit(cpu_max="20%"), "slice")
    sm.write("outer", slice_unit(memory_max="8M"), "slice")
    sm.write("inner", slice_unit("outer"), "slice")
    sm.write("forker", unit(command=("sh", "-c", FORK_TWELVE), sandbox=in_slice("few")))
    sm.write("busy", unit(command=BUSY, sandbox=in_slice("slow")))
    sm.write("hungry", unit(command=("sh", "-c", ALLOCATE_64M), sandbox=in_slice("inner")))
    sm.apply()
    for rel in ("few/forker", "slow/busy", "outer/inner/hungry", "outer/inner"):
        # The sandboxes have only their default pids_max (above `few`'s 5), the slice none.
        files = limit_files(pids_max=None if rel == "outer/inner" else SANDBOX_PIDS_MAX)
        assert read_files(f"{sm.base}/{rel}", files) == files, rel

    forks = wait_for(lambda: _log_with(sm, "forker", "loop ended"), "the fork loop")
    assert "can't fork" in forks or "Resource temporarily unavailable" in forks, forks
    assert "forked 12" not in forks, forks
    assert int(read_cgroup("pids", f"{sm.base}/few", "pids.current")) <= 5

    tail = wait_for(lambda: _log_with(sm, "hungry", "tail exited"), "tail")
    assert "tail exited 137" in tail, tail
    assert sm.status_of("hungry")["usage"]["oom_kills"] >= 1

    slow = f"{sm.base}/slow"
    assert wait_for(lambda: _throttled(slow), "nr_throttled > 0 in the slice's cpu.stat") > 0
    usage = wait_for(
        lambda: (u := slice_status(sm, "slow")["usage"]).get("nr_throttled") and u,
        "the slice's nr_throttled in status --json",
    )
    assert usage["nr_throttled"] > 0, usage


# ---------------------------------------------------------------------------------------------
# Drift


@pytest.mark.root
def test_limits_changed_by_hand_are_planned_and_repaired_in_place(sm: Sandman) -> None:
    sm.write("a", slice_unit(cpu_weight=300, pids_max=100), "slice")
    sm.write("b", slice_unit("a", pids_max=50, memory_max="128M"), "slice")
    sm.write("w", unit(sandbox=in_slice("b"), rest=resources(memory_max="64M", pids_max=20)))
    sm.apply()
    init = sm.init("w")
    a, b, w = f"{sm.base}/a", f"{sm.base}/a/b", f"{sm.base}/a/b/w"
    memory_file = "memory.max" if V2 else "memory.limit_in_bytes"
    weight_file, hand_weight = ("cpu.weight", "50") if V2 else ("cpu.shares", "512")
    cgroup_file("memory", w, memory_file).write_text(str(32 * MiB))
    cgroup_file("pids", w, "pids.max").write_text("7")
    cgroup_file("cpu", a, weight_file).write_text(hand_weight)
    cgroup_file("pids", b, "pids.max").write_text("33")

    plan = sm.run("plan", str(sm.units), "--detailed-exitcode", expect=3).out
    lines = {line.split(":", 1)[0]: line for line in plan.splitlines() if line.startswith("!")}
    assert set(lines) == {"! sandbox/w", "! slice/a", "! slice/b"}, plan
    assert "resources.memory_max" in plan and "resources.pids_max" in plan, plan
    assert "slice.cpu_weight" in lines["! slice/a"] and "slice.pids_max" in lines["! slice/b"]
    actions = json.loads(sm.run("plan", str(sm.units), "--json").out)["actions"]
    assert {a["object"]: (a["action"], a["reason"]) for a in actions} == {
        "sandbox/w": ("repair", "drift"),
        "slice/a": ("repair", "drift"),
        "slice/b": ("repair", "drift"),
    }
    (repair,) = [x for x in actions if x["object"] == "sandbox/w"]
    assert "resources.memory_max: expected 64M, found 32M" in repair["drift"]
    assert "resources.pids_max: expected 20, found 7" in repair["drift"]
    assert sm.status_of("w")["drift"], "status --json shows no drift"

    sm.apply()
    assert sm.init("w") == init and alive(*init), "the repair restarted the init"
    for rel, expected in (
        (a, limit_files(cpu_weight=300, pids_max=100)),
        (b, limit_files(pids_max=50, memory_max=128 * MiB)),
        (w, limit_files(memory_max=64 * MiB, pids_max=20)),
    ):
        assert read_files(rel, expected) == expected, rel
    assert sm.run("plan", str(sm.units), "--detailed-exitcode").out.startswith("No changes")
    assert sm.status_of("w")["drift"] == []


@pytest.mark.root
def test_a_hand_set_pids_max_shows_the_value_found_beside_a_change_of_the_unit(
    sm: Sandman,
) -> None:
    """pids.max set to 50000 by hand is shown as found, in a repair and beside a change of the
    unit's pids_max (#17: that showed `32 -> 40` alone). The file is the v1 pids hierarchy's
    on this hybrid host (whose v1 controllers hold the limits), the cgroup's own on v2."""
    sm.write("w", unit(rest=resources(pids_max=32)))
    sm.apply()
    init = sm.init("w")
    pids_file = cgroup_file("pids", sm.runtime("w")["cgroup"], "pids.max")
    pids_file.write_text("50000")
    found = "resources.pids_max: expected 32, found 50000"

    assert sm.run("plan", str(sm.units)).out.splitlines()[0] == f"! sandbox/w: {found}"
    sm.write("w", unit(rest=resources(pids_max=40)))
    plan = sm.run("plan", str(sm.units)).out.splitlines()
    assert plan[:3] == [
        "~ sandbox/w: update in place (resources.pids_max)",
        "    resources.pids_max: 32 -> 40",
        f"    drift: {found}",
    ], plan
    sm.apply()
    assert pids_file.read_text().strip() == "40"
    assert sm.init("w") == init and alive(*init), "the update restarted the init"
    assert sm.run("plan", str(sm.units), "--detailed-exitcode").out.startswith("No changes")


# ---------------------------------------------------------------------------------------------
# Nothing escapes destroy


def _daemons(sm: Sandman, argv: list[str]) -> list[int]:
    return [p for p in processes_in_cgroup(sm.base) if cmdline(p) == argv]


@pytest.mark.root
@pytest.mark.parametrize("pid_namespace", [True, False], ids=["own-pid-ns", "host-pid-ns"])
def test_a_double_forked_daemon_is_gone_after_destroy(sm: Sandman, pid_namespace: bool) -> None:
    """One daemon double-forked by the init's command, one by a command run with exec: both
    leave their parent (to the sandbox's PID 1, or to the host's init without a pid namespace)
    and stay only in the sandbox's cgroup, which destroy must empty."""
    command = ("sh", "-c", "(sleep 1001 </dev/null >/dev/null 2>&1 &); exec sleep 1000")
    ns = f"[namespaces]\npid = {str(pid_namespace).lower()}\n"
    sm.write("nest", unit(command=command, sandbox=in_slice("inner"), rest=ns))
    sm.write("inner", slice_unit(pids_max=50), "slice")
    sm.apply()
    sm.sh("nest", "(sleep 1002 </dev/null >/dev/null 2>&1 &)")
    first = wait_for(lambda: _daemons(sm, ["sleep", "1001"]), "the command's daemon")
    second = wait_for(lambda: _daemons(sm, ["sleep", "1002"]), "exec's daemon")
    daemons = [(pid, start_time(pid)) for pid in (*first, *second)]
    init = sm.init("nest")
    for pid, _ in daemons:
        assert pid != init[0]
        assert f"{sm.base}/inner/nest" in Path(f"/proc/{pid}/cgroup").read_text()
    sm.destroy(str(sm.units))
    assert [pid for pid, start in daemons if alive(pid, start)] == []
    assert not alive(*init)
    assert processes_in_cgroup(sm.base) == []
    assert cgroup_dirs(sm.base) == []


# ---------------------------------------------------------------------------------------------
# Moves and removals


@pytest.mark.root
def test_moving_a_sandbox_to_another_slice_recreates_it_there(sm: Sandman) -> None:
    sm.write("x", slice_unit(pids_max=50), "slice")
    sm.write("y", slice_unit(pids_max=60), "slice")
    sm.write("mover", unit(sandbox=in_slice("x"), rest=resources(pids_max=9)))
    sm.apply()
    old = sm.init("mover")
    assert sm.runtime("mover")["cgroup"] == f"{sm.base}/x/mover"
    sm.write("mover", unit(sandbox=in_slice("y"), rest=resources(pids_max=9)))
    plan = sm.run("plan", str(sm.units)).out
    assert "-/+ sandbox/mover:" in plan and "sandbox.slice" in plan, plan
    sm.apply()
    new = sm.init("mover")
    assert new != old and alive(*new) and not alive(*old)
    rel = f"{sm.base}/y/mover"
    assert sm.runtime("mover")["cgroup"] == rel
    assert str(new[0]) in read_cgroup("pids", rel, "cgroup.procs").split()
    assert read_cgroup("pids", rel, "pids.max") == "9"
    # The old cgroup is gone; the slice it was in stays.
    assert cgroup_dirs(sm.base, "x", "mover") == []
    assert cgroup_dirs(sm.base, "x")
    assert sm.sandbox_cgroups("mover") == cgroup_dirs(sm.base, "y", "mover")
    assert sm.status_of("mover")["slice"] == "y"


@pytest.mark.root
def test_moving_a_slice_to_another_parent_recreates_its_sandboxes(sm: Sandman) -> None:
    sm.write("a", slice_unit(pids_max=100), "slice")
    sm.write("b", slice_unit("a", pids_max=50), "slice")
    sm.write("w", unit(sandbox=in_slice("b")))
    sm.apply()
    old = sm.init("w")
    sm.write("b", slice_unit(pids_max=50), "slice")  # now directly under the root slice
    sm.apply()
    new = sm.init("w")
    assert new != old and alive(*new) and not alive(*old)
    assert sm.runtime("w")["cgroup"] == f"{sm.base}/b/w"
    assert read_cgroup("pids", f"{sm.base}/b", "pids.max") == "50"
    assert cgroup_dirs(sm.base, "a", "b") == []
    assert cgroup_dirs(sm.base, "a")
    assert "No changes" in sm.run("plan", str(sm.units)).out


@pytest.mark.root
def test_removed_slices_go_after_the_sandboxes_moved_out_of_them(sm: Sandman) -> None:
    sm.write("a", slice_unit(pids_max=100), "slice")
    sm.write("b", slice_unit("a", pids_max=50), "slice")
    sm.write("keep", slice_unit(pids_max=70), "slice")
    sm.write("w", unit(sandbox=in_slice("b")))
    sm.write("v", unit(sandbox=in_slice("a")))
    sm.apply()
    assert cgroup_dirs(sm.base, "a", "b", "w")
    old_w, old_v = sm.init("w"), sm.init("v")
    # Both slices go; w moves to `keep`, v to the root slice.
    sm.remove("a", "slice")
    sm.remove("b", "slice")
    sm.write("w", unit(sandbox=in_slice("keep")))
    sm.write("v", unit())
    events = apply_events(sm.run("apply", str(sm.units), "--json").out)
    sm.note_records()
    done = [e["action"].split(":", 1)[0] for e in events if e["event"] == "done"]
    assert [e for e in events if e["event"] == "failed"] == []
    assert set(done) == {"-/+ sandbox/w", "-/+ sandbox/v", "- slice/a", "- slice/b"}, done
    # Each slice goes after the sandboxes that were in it, and b (the child) before a.
    assert done.index("- slice/b") > done.index("-/+ sandbox/w")
    assert done.index("- slice/a") > done.index("-/+ sandbox/v")
    assert done.index("- slice/a") > done.index("- slice/b")
    assert cgroup_dirs(sm.base, "a") == []
    assert not sm.record_path("a", "slices").exists()
    assert not sm.record_path("b", "slices").exists()
    assert sm.runtime("w")["cgroup"] == f"{sm.base}/keep/w"
    assert sm.runtime("v")["cgroup"] == f"{sm.base}/v"
    assert alive(*sm.init("w")) and alive(*sm.init("v"))
    assert not alive(*old_w) and not alive(*old_v)
    assert [s["name"] for s in sm.status()["slices"]] == ["keep"]


@pytest.mark.root
@pytest.mark.parametrize("removed", ["b", "a"], ids=["used-by-a-sandbox", "parent-of-a-slice"])
def test_removing_a_slice_still_in_use_is_a_validate_error(sm: Sandman, removed: str) -> None:
    sm.write("a", slice_unit(pids_max=100), "slice")
    sm.write("b", slice_unit("a", pids_max=50), "slice")
    sm.write("w", unit(sandbox=in_slice("b")))
    sm.apply()
    init = sm.init("w")
    sm.remove(removed, "slice")
    for verb in ("validate", "plan", "apply"):
        result = sm.run(verb, str(sm.units), expect=2)
        assert f"'{removed}'" in result.err or f"'{removed}'" in result.out, result
    failed = json.loads(sm.run("validate", str(sm.units), "--json", expect=2).out)
    assert failed["error"]["kind"] == "invalid_units"
    # Nothing was touched.
    assert sm.init("w") == init and alive(*init)
    assert cgroup_dirs(sm.base, "a", "b", "w")
    assert sm.record_path(removed, "slices").exists()
    # Put back, the directory is valid and matches the host again.
    if removed == "a":
        sm.write("a", slice_unit(pids_max=100), "slice")
    else:
        sm.write("b", slice_unit("a", pids_max=50), "slice")
    assert "No changes" in sm.run("plan", str(sm.units)).out


# ---------------------------------------------------------------------------------------------
# The way into the cgroup


def children(pid: int) -> list[int]:
    return [
        int(child)
        for task in Path(f"/proc/{pid}/task").glob("*/children")
        for child in task.read_text().split()
    ]


def in_cgroup(pid: int, base: str, name: str) -> bool:
    """pid is in the sandbox's cgroup, in any hierarchy."""
    return any(
        str(pid) in Path(directory, "cgroup.procs").read_text().split()
        for directory in cgroup_dirs(base, name)
    )


@pytest.mark.root
def test_the_first_child_is_born_in_the_cgroup_on_pure_v2(sm: Sandman) -> None:
    """The first child is held at its first step (the `cgroup` step, SANDMAN_FAULT_PAUSE) and
    looked at as soon as it exists. On pure v2 it is in the sandbox's cgroup already: born there
    by clone3(CLONE_INTO_CGROUP), never outside it. On v1 and hybrid hosts it is forked in
    apply's cgroup and joins the sandbox's only after that step. Either way the init ends up
    there."""
    sm.write("born", unit())
    hold = WAIT / 5  # the child sleeps this long at the step; found within a few polls
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SANDMAN_")}
    environment["SANDMAN_FAULT_PAUSE"] = f"sandbox/born@cgroup={hold}"
    apply = subprocess.Popen(
        sm.argv("apply", str(sm.units)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )
    try:
        (first,) = wait_for(lambda: children(apply.pid), "apply's first child")
        born_inside = in_cgroup(first, sm.base, "born")
        out, err = apply.communicate(timeout=120)
    finally:
        if apply.poll() is None:
            apply.kill()
            apply.communicate()
    sm.note_records()
    assert apply.returncode == 0, (out, err)
    release = tuple(int(part) for part in re.findall(r"\d+", os.uname().release)[:2])
    expected = V2 and release >= (5, 7)  # CLONE_INTO_CGROUP came with Linux 5.7
    assert born_inside is expected, f"first child {first} in the cgroup at birth: {born_inside}"
    init = sm.running_init("born")
    assert in_cgroup(init, sm.base, "born")


# ---------------------------------------------------------------------------------------------
# status --json


@pytest.mark.root
def test_status_json_reports_usage_of_sandboxes_and_slices(sm: Sandman) -> None:
    sm.write("s", slice_unit(pids_max=50), "slice")
    sm.write("w", unit(sandbox=in_slice("s"), rest=resources(memory_max="64M")))
    sm.apply()
    report = sm.status()
    (entry,) = report["sandboxes"]
    usage = entry["usage"]
    assert set(USAGE_KEYS) <= usage.keys(), usage
    # Every counter is read on this host: none may be null for a running sandbox, but
    # memory_peak on a v2 kernel without memory.peak (before 5.19).
    nullable = ("memory_peak",) if V2 else ()
    for key in USAGE_KEYS:
        assert isinstance(usage[key], int) or key in nullable, (key, usage)
    assert usage["memory_current"] > 0
    assert usage["cpu_usec"] > 0
    assert usage["pids_current"] == 1
    assert usage["oom_kills"] == 0
    assert usage["nr_throttled"] == 0
    (slice_entry,) = report["slices"]
    assert set(USAGE_KEYS) <= slice_entry["usage"].keys(), slice_entry
    assert slice_entry["usage"]["pids_current"] == 1
    # The text form lists the sandbox as running, with a memory figure.
    (row,) = [line.split() for line in sm.run("status").out.splitlines() if line.startswith("w ")]
    assert row[1] == "running" and row[6] != "-", row
