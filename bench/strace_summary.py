"""Sum the syscall times of an `strace -f -T -y` log by syscall and (normalised) target.

cProfile sees only the process it runs in; the work of `sandman apply`'s forked children (joining
cgroups, mounting, unsharing, exec) shows there as one long wait. strace follows the children:
`summarise(path, ...)` groups each syscall by name and by what it acts on (the path of its first
fd, from `-y`, or its first string argument), with the temporary directory, sandbox names and
numbers blanked, so that 50 sandboxes' calls add up to one row per kind. Blocking waits (reads
of pipes, wait4, select, poll, futex) are left out: they are a process waiting for another, whose
own calls are counted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

_LINE = re.compile(r"^(\d+)\s+(.*)$")
_RESUMED = re.compile(r"^<\.\.\. (\w+) resumed>(.*)$")
_DURATION = re.compile(r"<(\d+\.\d+)>\s*$")
_NAME = re.compile(r"^(\w+)\(")
_FD_PATH = re.compile(r"\(-?\d+<([^>]*)>")
_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"')
_WAITS = frozenset({"wait4", "waitid", "select", "pselect6", "poll", "ppoll", "epoll_wait"})
_WAITS |= {"futex", "clock_nanosleep", "nanosleep"}


@dataclass
class Row:
    key: str
    calls: int = 0
    seconds: float = 0.0
    slowest: float = 0.0
    slow: int = 0  # calls over the threshold


@dataclass
class Summary:
    rows: list[Row] = field(default_factory=list)
    total: float = 0.0  # seconds in every counted syscall
    calls: int = 0


def _target(call: str) -> str:
    fd = _FD_PATH.search(call)
    if fd:
        return fd.group(1)
    string = _STRING.search(call)
    return string.group(1) if string else ""


def normalise(target: str, workdir: str, names: Sequence[str]) -> str:
    text = target.replace(workdir, "TMP")
    if text.startswith(("pipe:", "socket:", "anon_inode:")):
        return text.split(":", 1)[0]
    text = re.sub(r"sandman-s[0-9a-f]{3}\b", "sandman-TAG", text)  # the instance's cgroup
    for name in sorted(names, key=len, reverse=True):
        text = re.sub(rf"(?<=/){re.escape(name)}(?=[/.]|$)", "NAME", text)
    return re.sub(r"\d+", "N", text)


def summarise(path: str, workdir: str, names: Sequence[str], threshold: float = 0.005) -> Summary:
    pending: dict[str, str] = {}
    rows: dict[str, Row] = {}
    summary = Summary()
    with open(path, encoding="utf-8", errors="replace") as handle:
        for raw in handle:
            line = _LINE.match(raw.rstrip("\n"))
            if not line:
                continue
            pid, rest = line.groups()
            if rest.endswith("<unfinished ...>"):
                pending[pid] = rest.removesuffix("<unfinished ...>")
                continue
            resumed = _RESUMED.match(rest)
            if resumed:
                rest = pending.pop(pid, resumed.group(1) + "(") + resumed.group(2)
            name, duration = _NAME.match(rest), _DURATION.search(rest)
            if not name or not duration:
                continue
            call = name.group(1)
            target = normalise(_target(rest), workdir, names)
            if call in _WAITS or (call == "read" and target == "pipe"):
                continue
            seconds = float(duration.group(1))
            key = f"{call} {target}".rstrip()
            row = rows.setdefault(key, Row(key))
            row.calls += 1
            row.seconds += seconds
            row.slowest = max(row.slowest, seconds)
            row.slow += seconds > threshold
            summary.total += seconds
            summary.calls += 1
    summary.rows = sorted(rows.values(), key=lambda row: -row.seconds)
    return summary
