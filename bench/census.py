"""Which host processes a started sandbox costs: a census of /proc right before and right after
each run that starts sandboxes.

From the inits the run started (their PIDs from the tool's own state: sandman's records, `crun
state`), the host processes there because of them, outside their pid namespaces: the inits'
ancestors the run made (a monitor or shim between an init and the host's init); processes whose
command line names the benchmark's work dir, in every path the tools are given (a sandman CLI
process still alive, a daemon a tool left behind); processes in an init's cgroup that are not in
its pid namespace (a helper left there); and everything descending from one of those. Their
resident memory (VmRSS) is the host memory the sandboxes cost beyond their own processes.
Zombies hold none and are not counted, whatever made them (an exited parent leaves its children
to the host's init, which may reap them late); nor are new processes unrelated to the run (other
work on the machine), so that a busy host does not pass for a cost.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from harness import SLEEP, Trial

_PF_KTHREAD = 0x00200000


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start: int  # clock ticks after boot: with the PID, names one process for good
    zombie: bool
    argv: tuple[str, ...]
    rss: int  # bytes
    pidns: int  # inode of its pid namespace; 0 when unreadable (e.g. a protected PID 1)
    cgroup: str  # /proc/PID/cgroup

    def __str__(self) -> str:
        shown = " ".join(self.argv)
        shown = shown[:57] + "..." if len(shown) > 60 else shown
        return f"{self.pid} {shown} ({'zombie' if self.zombie else f'{self.rss} B'})"


def read_proc(pid: int) -> Proc | None:
    """One process, or None when it is gone or a kernel thread."""
    try:
        files = [_read(f"/proc/{pid}/{name}") for name in ("stat", "cmdline", "status", "cgroup")]
    except OSError:
        return None
    stat, cmdline, status, cgroup = files
    try:
        pidns = os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        pidns = 0
    # After "(comm) ": state ppid pgrp session tty tpgid flags ... starttime (field 22).
    fields = stat[stat.rfind(")") + 2 :].split()
    if int(fields[6]) & _PF_KTHREAD:
        return None
    rss = next(
        (int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")),
        0,
    )
    argv = tuple(cmdline.split("\0")[:-1])
    return Proc(pid, int(fields[1]), int(fields[19]), fields[0] in "ZX", argv, rss, pidns, cgroup)


def _read(path: str) -> str:
    with open(path, "rb") as handle:
        return handle.read().decode(errors="replace")


Snapshot = Mapping[tuple[int, int], Proc]


def snapshot() -> Snapshot:
    procs = (read_proc(int(entry)) for entry in os.listdir("/proc") if entry.isdigit())
    return {(proc.pid, proc.start): proc for proc in procs if proc is not None}


@dataclass(frozen=True)
class Census:
    """What a run left on the host, taken right after the command returned."""

    count: int  # sandboxes the run started
    running: int  # of the inits the tool reports, how many run the command (exec done)
    extra: tuple[Proc, ...]  # live host processes there because of the sandboxes

    @property
    def extra_bytes(self) -> int:
        return sum(proc.rss for proc in self.extra)


def census(
    before: Snapshot, after: Snapshot, init_pids: list[int], marker: str, count: int
) -> Census:
    by_pid = {proc.pid: proc for proc in after.values()}
    inits = [by_pid[pid] for pid in init_pids if pid in by_pid]
    namespaces = {init.pidns for init in inits}
    new = {proc.pid for key, proc in after.items() if key not in before}
    me = by_pid.get(os.getpid())
    outside = [p for p in after.values() if p.pidns not in namespaces and p.pid != os.getpid()]
    related: set[int] = set()
    for init in inits:  # the run's own processes between an init and the host's init
        parent = by_pid.get(init.ppid)
        while parent is not None and parent.pid in new and parent.pid > 1:
            related.add(parent.pid)
            parent = by_pid.get(parent.ppid)
    cgroups = {init.cgroup for init in inits} - ({me.cgroup} if me else set())
    for proc in outside:
        if any(marker in arg for arg in proc.argv) or proc.cgroup in cgroups:
            related.add(proc.pid)
    related |= {proc.pid for proc in outside if _descends(proc, related, by_pid)}
    found = [by_pid[pid] for pid in sorted(related)]
    running = sum(init.argv == SLEEP for init in inits)
    return Census(count, running, tuple(proc for proc in found if not proc.zombie))


def _descends(proc: Proc, ancestors: set[int], by_pid: Mapping[int, Proc]) -> bool:
    seen = set()
    current = by_pid.get(proc.ppid)
    while current is not None and current.pid not in seen and current.pid > 1:
        if current.pid in ancestors:
            return True
        seen.add(current.pid)
        current = by_pid.get(current.ppid)
    return False


class Censuses:
    """A census around each kept start of `trial`, which starts `count` sandboxes whose init PIDs
    `inits()` reads from the tool."""

    def __init__(
        self, trial: Trial, marker: str, count: int, inits: Callable[[], list[int]]
    ) -> None:
        self.taken: list[Census] = []
        self.marker, self.count, self.inits = marker, count, inits
        self.before: Snapshot = {}
        trial.before, trial.after = self._before, self._after

    def _before(self) -> None:
        self.before = snapshot()

    def _after(self, keep: bool) -> None:
        if keep:
            after = snapshot()
            self.taken.append(census(self.before, after, self.inits(), self.marker, self.count))

    def worst(self) -> float | None:
        """The most bytes per sandbox of any run."""
        return max((c.extra_bytes / c.count for c in self.taken), default=None)

    def describe(self) -> str:
        if not self.taken:
            return "no run"
        bad = max(self.taken, key=lambda c: c.extra_bytes)
        ran = sum(c.running == c.count for c in self.taken)
        shown = "; ".join(map(str, bad.extra[:3])) or "none"
        return (
            f"all inits exec'd in {ran}/{len(self.taken)} runs; host processes there for them: "
            f"{len(bad.extra)}, {bad.extra_bytes} B ({shown})"
        )
