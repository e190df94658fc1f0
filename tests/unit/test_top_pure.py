"""`sandman top`'s arithmetic and the I/O counters' parsers, without a cgroup."""

from __future__ import annotations

from sandman.commands.top import Reading, rates, render
from sandman.kernel.cgroup_v1 import parse_blkio_bytes
from sandman.kernel.cgroup_v2 import parse_io_stat


def reading(at: float, cpu_usec: int, pid: int = 10, start: int = 5) -> Reading:
    counters: dict[str, int | None] = {
        "cpu_usec": cpu_usec,
        "memory_current": 16 << 20,
        "memory_max": 64 << 20,
        "pids_current": 3,
        "pids_max": None,
        "io_read_bytes": 4096,
        "io_write_bytes": None,
    }
    return Reading("web", pid, start, at, counters)


def test_cpu_is_the_share_of_one_cpu_over_the_interval() -> None:
    (row,) = rates([reading(100.0, 1_000_000)], [reading(102.0, 2_500_000)])
    assert row["cpu_percent"] == 75.0 and row["memory_percent"] == 25.0
    (two_cpus,) = rates([reading(0.0, 0)], [reading(1.0, 2_000_000)])
    assert two_cpus["cpu_percent"] == 200.0


def test_a_new_init_between_readings_has_no_cpu_share_yet() -> None:
    (row,) = rates([reading(0.0, 9_000_000, pid=10)], [reading(1.0, 10_000, pid=11)])
    assert row["cpu_percent"] is None
    (first,) = rates([], [reading(1.0, 10_000)])
    assert first["cpu_percent"] is None


def test_render_shows_dashes_for_what_is_unknown() -> None:
    (row,) = rates([], [reading(1.0, 10_000)])
    header, line = render([row]).splitlines()
    assert header.split()[:4] == ["NAME", "PID", "CPU", "%"]
    assert line.split() == ["web", "10", "-", "16M", "64M", "25.0", "3/max", "4.0K", "-"]
    assert render([]) == "No sandbox is running.\n"


def test_v1_blkio_bytes_are_summed_over_devices() -> None:
    text = "8:0 Read 4096\n8:0 Write 512\n8:16 Read 1\n8:16 Sync 9\nTotal 4609\n"
    assert parse_blkio_bytes(text) == {"io_read_bytes": 4097, "io_write_bytes": 512}


def test_v2_io_stat_bytes_are_summed_over_devices() -> None:
    text = "8:0 rbytes=4096 wbytes=512 rios=1 wios=1\n8:16 rbytes=1 wbytes=0 dbytes=7\n"
    assert parse_io_stat(text) == {"io_read_bytes": 4097, "io_write_bytes": 512}
