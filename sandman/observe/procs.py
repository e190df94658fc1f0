"""Processes as observe sees them: a PID is the sandbox's init only if its start time matches."""

from __future__ import annotations

import functools
import os

from sandman.kernel.mountinfo import unescape

NAMESPACES = ("cgroup", "ipc", "mnt", "net", "pid", "time", "user", "uts")


def parse_stat(stat: str) -> tuple[str, int]:
    """State (field 3) and start time (field 22, clock ticks since boot) of /proc/PID/stat; the
    command name before them may hold spaces and parentheses."""
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def start_time(pid: int) -> int | None:
    """The start time of a live process; None when it is gone or only a zombie waiting for its
    parent to reap it (an init that died stays one until the host's init collects it)."""
    raw = _read(f"/proc/{pid}/stat")
    if raw is None:
        return None
    try:
        state, start = parse_stat(raw.decode("ascii", errors="replace"))
    except (ValueError, IndexError):
        return None
    return None if state in ("Z", "X") else start


def _read(path: str) -> bytes | None:
    """A /proc file's bytes, None when it (its process) is gone. os.open/os.read: observe reads
    one or two per sandbox, and a text-mode open() costs three times as much."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks)


def is_running(pid: int, recorded_start: int) -> bool:
    """True when `pid` is alive and is the process that was recorded, not a reuse of its PID."""
    return pid > 0 and start_time(pid) == recorded_start


def mount_points(pid: int | str) -> set[str] | None:
    """Where the process (or "self") sees mounts, as paths inside its root; None when it is
    gone."""
    raw = _read(f"/proc/{pid}/mountinfo")
    if raw is None:
        return None
    lines = raw.decode(errors="replace").splitlines()
    return {unescape(line.split(" ", 5)[4]) for line in lines if line.count(" ") >= 5}


def namespace_inodes(pid: int) -> dict[str, int]:
    inodes = {}
    for name in NAMESPACES:
        try:
            inodes[name] = os.stat(f"/proc/{pid}/ns/{name}").st_ino
        except OSError:
            continue
    return inodes


@functools.lru_cache(maxsize=1)
def boot_time() -> float:
    """Seconds since the epoch at boot, to turn start times in ticks into dates; read once per
    process (an apply records it for every sandbox, and /proc/stat is long)."""
    with open("/proc/stat", "rb") as handle:  # bytes: no codec module to import
        for line in handle:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    return 0.0


def started_at(start_ticks: int) -> float:
    return boot_time() + start_ticks / os.sysconf("SC_CLK_TCK")


def receives(pid: int, signal_number: int) -> bool:
    """Whether a signal sent now reaches the process, as the kernel decides at sending: it does
    when the process blocks it (an init reading its signals from a signalfd, as systemd does,
    blocks them and has no handler) or has a handler; not when it ignores it; with the default
    action, it does unless the process is the init of a pid namespace, to which the kernel drops
    such a signal even from an ancestor namespace. What is dropped is not worth waiting on."""
    bit = 1 << (signal_number - 1)
    masks: dict[str, int] = {}
    namespace_init = False
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as handle:  # utf-8: no codec import
            for line in handle:
                field, _, value = line.partition(":")
                if field in ("SigBlk", "SigIgn", "SigCgt"):
                    masks[field] = int(value, 16)
                elif field == "NSpid":
                    namespace_init = value.split()[-1:] == ["1"]
    except (OSError, ValueError):
        return False
    if (masks.get("SigBlk", 0) | masks.get("SigCgt", 0)) & bit:
        return True
    return not masks.get("SigIgn", 0) & bit and not namespace_init
