"""`sandman top` / `stats` (issue #17): the running sandboxes' use, read from their cgroups. Its
numbers are checked against the cgroup files read here directly, around the reading."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import test_sandboxes as base
from test_sandboxes import Sandman, sm, unit, wait_for

pytestmark = pytest.mark.root

busybox_image = base.busybox_image
__all__ = ["busybox_image", "sm"]  # fixtures, used by name

# The file of each counter: cgroup v1 names first, then v2's.
FILES = {
    "memory_current": ("memory.usage_in_bytes", "memory.current"),
    "memory_max": ("memory.limit_in_bytes", "memory.max"),
    "pids_current": ("pids.current",),
    "cpu_usec": ("cpuacct.usage", "cpu.stat"),
}


def counter(sm: Sandman, name: str, key: str) -> int:
    for directory in base.cgroup_dirs(sm.base, name):
        for file in FILES[key]:
            path = Path(directory, file)
            if not path.exists():
                continue
            text = path.read_text()
            if file == "cpuacct.usage":
                return int(text) // 1000
            if file == "cpu.stat":  # v1's cpu.stat has no usage: cpuacct.usage is in another dir
                fields = dict(line.split() for line in text.splitlines())
                if "usage_usec" not in fields:
                    continue
                return int(fields["usage_usec"])
            return int(text.split()[0])
    pytest.fail(f"no {key} file for {name} under {sm.base}")


def top_once(sm: Sandman, *args: str) -> dict[str, dict[str, object]]:
    done = sm.run("top", "--once", "--json", "--interval", "0.5", *args)
    (line,) = done.out.splitlines()
    return {row["name"]: row for row in json.loads(line)["sandboxes"]}


def test_top_once_json_matches_the_cgroup_files(sm: Sandman) -> None:
    sm.write("spin", unit(command=("sh", "-c", "while :; do :; done")))
    # Three tasks and 16M of tmpfs pages, which count as the sandbox's memory.
    fill = "dd if=/dev/zero of=/dev/shm/fill bs=1048576 count=16"
    script = f"{fill}; sleep 1000 & sleep 1000 & exec sleep 1000"
    sm.write("idle", unit(command=("sh", "-c", script), rest='[resources]\nmemory_max = "64M"\n'))
    sm.apply()
    wait_for(lambda: counter(sm, "idle", "pids_current") == 3 or None, "idle's three tasks")
    wait_for(lambda: counter(sm, "idle", "memory_current") > 16 << 20 or None, "idle's 16M")
    cpu_before = counter(sm, "spin", "cpu_usec")
    rows = top_once(sm)
    cpu_after = counter(sm, "spin", "cpu_usec")
    assert set(rows) == {"spin", "idle"}
    idle, spin = rows["idle"], rows["spin"]
    assert idle["pid"] == sm.running_init("idle")
    assert idle["pids_current"] == 3 and idle["pids_max"] == 4096
    assert idle["memory_max"] == counter(sm, "idle", "memory_max") == 64 << 20
    memory = counter(sm, "idle", "memory_current")
    assert isinstance(idle["memory_current"], int)
    assert abs(idle["memory_current"] - memory) < 4 << 20, (idle, memory)
    assert idle["memory_percent"] == pytest.approx(idle["memory_current"] / (64 << 20) * 100, 0.1)
    assert isinstance(spin["cpu_usec"], int) and cpu_before <= spin["cpu_usec"] <= cpu_after
    # A busy loop over half a second: a share of a CPU well above nothing (the host is shared).
    assert isinstance(spin["cpu_percent"], float) and spin["cpu_percent"] > 5, spin
    assert isinstance(idle["cpu_percent"], float) and idle["cpu_percent"] < 50, idle
    assert {"io_read_bytes", "io_write_bytes"} <= set(idle)
    assert set(top_once(sm, "idle")) == {"idle"}


def test_top_leaves_out_exited_sandboxes_and_refuses_unknown_names(sm: Sandman) -> None:
    sm.write("gone", unit(command=("true",)))
    sm.write("here", unit())
    sm.apply()
    wait_for(lambda: not base.alive(*sm.init("gone")) or None, "the short init's end")
    assert set(top_once(sm)) == {"here"}
    table = sm.run("stats", "--no-stream", "--interval", "0.5").out.splitlines()
    assert table[0].split()[:3] == ["NAME", "PID", "CPU"] and table[1].startswith("here "), table
    unknown = sm.run("top", "nope", "--once", expect=2)
    assert "no sandbox 'nope'" in unknown.err and "Traceback" not in unknown.err, unknown
    bad = sm.run("top", "--interval", "-1", expect=2)
    assert bad.err.startswith("usage: sandman top"), bad


def test_top_streams_until_interrupted(sm: Sandman) -> None:
    sm.write("here", unit())
    sm.apply()
    argv = sm.argv("top", "--json", "--interval", "0.2")
    with subprocess.Popen(argv, stdout=subprocess.PIPE, text=True) as top:
        assert top.stdout is not None
        readings = [json.loads(top.stdout.readline()) for _ in range(3)]
        top.send_signal(2)  # Ctrl-C
        assert top.wait(timeout=base.WAIT) == 0
    assert all(r["sandboxes"][0]["name"] == "here" for r in readings)
    assert os.path.exists(sm.log_dir / "here.log")
