"""`sandman top [NAME...]` (also `stats`, as `podman stats`): live use of the running sandboxes.

Every --interval seconds each running sandbox's cgroup is read through the kernel layer's driver
(usage, io_usage, read_limits) and a table printed: CPU as the share of one CPU used over the
interval (the difference of two readings of cpu_usec), memory against its limit, tasks against
theirs, bytes read and written since the sandbox started. On a terminal the table is redrawn in
place with two ANSI sequences (no curses); elsewhere tables follow one another, and --json prints
one object per reading. --once prints one reading, over one interval, and exits.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable
from typing import Any, NamedTuple

from sandman import output
from sandman.errors import UsageError
from sandman.kernel.cgroup import CgroupDriver, driver_for
from sandman.observe import procs
from sandman.observe.records import read_records
from sandman.paths import Paths
from sandman.placement import cgroup_base

_CLEAR = "\x1b[H\x1b[2J"  # cursor home, erase the screen


class Reading(NamedTuple):
    """One sandbox's counters at one moment."""

    name: str
    pid: int
    start_time: int  # with pid, names the init: a restart between readings is no CPU delta
    at: float  # time.monotonic()
    counters: dict[str, int | None]


def run(args: argparse.Namespace) -> int:
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    driver = driver_for(cgroup_base(paths.tag))
    redraw = sys.stdout.isatty() and not args.json and not args.once
    try:
        before = read_all(paths.state_dir, driver, args.names)
        while True:
            time.sleep(args.interval)
            now = read_all(paths.state_dir, driver, args.names)
            rows = rates(before, now)
            _show(rows, args, redraw)
            if args.once:
                return 0
            before = now
    except KeyboardInterrupt:  # how one leaves top: not a failure
        return 0


def read_all(state_dir: str, driver: CgroupDriver, names: list[str]) -> list[Reading]:
    """A reading of every running sandbox (of NAMES, when given)."""
    records = [r for r in read_records(state_dir) if r.kind == "sandbox"]
    unknown = sorted(set(names) - {r.name for r in records})
    if unknown:
        raise UsageError(f"no sandbox {unknown[0]!r} is applied in `{state_dir}`")
    found = []
    for record in sorted(records, key=lambda r: r.name):
        runtime = record.runtime
        if names and record.name not in names:
            continue
        if runtime.cgroup is None or not procs.is_running(runtime.pid, runtime.start_time):
            continue
        counters = _counters(driver, runtime.cgroup)
        if counters is not None:
            found.append(
                Reading(record.name, runtime.pid, runtime.start_time, time.monotonic(), counters)
            )
    return found


def _counters(driver: CgroupDriver, cgroup: str) -> dict[str, int | None] | None:
    """What the cgroup's files say now; None when it went away meanwhile."""
    try:
        limits = driver.read_limits(cgroup)
        return {
            **driver.usage(cgroup),
            **driver.io_usage(cgroup),
            "memory_max": _int(limits.get("memory_max")),
            "pids_max": _int(limits.get("pids_max")),
        }
    except FileNotFoundError:
        return None


def _int(value: object) -> int | None:
    return int(value) if isinstance(value, int | float) else None


def rates(before: Iterable[Reading], now: Iterable[Reading]) -> list[dict[str, Any]]:
    """Each sandbox of `now` with its counters and its CPU share over the interval since its
    reading in `before` (None for an init that was not there, or was another one)."""
    earlier = {(r.name, r.pid, r.start_time): r for r in before}
    rows = []
    for reading in now:
        previous = earlier.get((reading.name, reading.pid, reading.start_time))
        counters = reading.counters
        rows.append(
            {
                "name": reading.name,
                "pid": reading.pid,
                "cpu_percent": _cpu_percent(previous, reading),
                **counters,
                "memory_percent": _percent(counters.get("memory_current"), counters["memory_max"]),
            }
        )
    return rows


def _cpu_percent(previous: Reading | None, reading: Reading) -> float | None:
    if previous is None:
        return None
    used, was = reading.counters.get("cpu_usec"), previous.counters.get("cpu_usec")
    elapsed = reading.at - previous.at
    if used is None or was is None or elapsed <= 0:
        return None
    return round(max(0, used - was) / (elapsed * 1e6) * 100, 1)


def _percent(part: int | None, whole: int | None) -> float | None:
    return None if part is None or not whole else round(part / whole * 100, 1)


def _show(rows: list[dict[str, Any]], args: argparse.Namespace, redraw: bool) -> None:
    if args.json:  # one line per reading: a stream a script reads line by line
        reading = {"time": time.time(), "interval": args.interval, "sandboxes": rows}
        sys.stdout.write(json.dumps(reading) + "\n")
        sys.stdout.flush()
        return
    text = render(rows)
    if redraw:
        stamp = time.strftime("%H:%M:%S")
        text = f"{_CLEAR}sandman top - {stamp}, every {args.interval:g} s (Ctrl-C quits)\n\n{text}"
    elif not args.once:
        text += "\n"
    sys.stdout.write(text)
    sys.stdout.flush()


def render(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "No sandbox is running.\n"
    header = ("NAME", "PID", "CPU %", "MEMORY", "LIMIT", "MEM %", "PIDS", "IO READ", "IO WRITE")
    table = [header]
    for row in rows:
        pids_max = row.get("pids_max")
        table.append(
            (
                row["name"],
                str(row["pid"]),
                _number(row["cpu_percent"]),
                _size(row.get("memory_current")),
                _size(row.get("memory_max")) if row.get("memory_max") else "-",
                _number(row["memory_percent"]),
                f"{_number(row.get('pids_current'))}/{pids_max if pids_max else 'max'}",
                _size(row.get("io_read_bytes")),
                _size(row.get("io_write_bytes")),
            )
        )
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) for line in table]
    return "\n".join(line.rstrip() for line in lines) + "\n"


def _number(value: object) -> str:
    return "-" if value is None else str(value)


def _size(value: object) -> str:
    return output.size(value) if isinstance(value, int) else "-"
