"""Which host processes a started sandbox costs: a census of /proc right before and right after
each run that starts sandboxes.

From the inits the run started (their PIDs from the tool's own state: sandman's records, `crun
state`), the host processes there because of them, outside their pid namespaces: the inits'
ancestors the run made (a monitor or shim between an init and the host's init); processes whose
command line names the benchmark's work dir, in every path the tools are given (a sandman CLI
process still alive, a daemon a tool left behind); processes in an init's cgroup but not in its
pid namespace (a helper left there); and everything descending from those. Their resident memory
(VmRSS) is the host memory the sandboxes cost beyond their own processes. Zombies hold none and
are not counted, whatever made them; nor are new processes unrelated to the run (other work on
the machine), so that a busy host does not pass for a cost.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from harness import SLEEP, Trial

FILES = ("stat", "cmdline", "status", "cgroup")


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


def read_proc(pid: int) -> Proc | None:
    """One process, or None when it is gone or a kernel thread."""
    try:
        stat, cmdline, status, cgroup = (_read(f"/proc/{pid}/{name}") for name in FILES)
    except OSError:
        return None
    try:
        pidns = os.stat(f"/proc/{pid}/ns/pid").st_ino
    except OSError:
        pidns = 0
    # After "(comm) ": state ppid pgrp session tty tpgid flags ... starttime (field 22).
    fields = stat[stat.rfind(")") + 2 :].split()
    if int(fields[6]) & 0x00200000:  # PF_KTHREAD
        return None
    vmrss = [line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")]
    rss, argv = int(vmrss[0]) * 1024 if vmrss else 0, tuple(cmdline.split("\0")[:-1])
    return Proc(pid, int(fields[1]), int(fields[19]), fields[0] in "ZX", argv, rss, pidns, cgroup)


def _read(path: str) -> str:
    with open(path, "rb") as handle:
        return handle.read().decode(errors="replace")


def snapshot() -> dict[tuple[int, int], Proc]:
    procs = (read_proc(int(entry)) for entry in os.listdir("/proc") if entry.isdigit())
    return {(proc.pid, proc.start): proc for proc in procs if proc is not None}


class Censuses:
    """A census around each kept start of `trial`, which starts `count` sandboxes whose init PIDs
    `inits()` reads from the tool: per run, how many inits run the command, and the live host
    processes there for them."""

    def __init__(self, trial: Trial, marker: str, count: int, inits: Callable[[], list[int]]):
        self.marker, self.count, self.inits = marker, count, inits
        self.runs: list[tuple[int, list[Proc]]] = []
        self.before: dict[tuple[int, int], Proc] = {}
        trial.before, trial.after = self._before, self._after

    def _before(self) -> None:
        self.before = snapshot()

    def _after(self, keep: bool) -> None:
        if keep:
            after = snapshot()
            self.runs.append(self.left(after, self.inits()))

    def left(self, after: dict[tuple[int, int], Proc], pids: list[int]) -> tuple[int, list[Proc]]:
        by_pid = {proc.pid: proc for proc in after.values()}
        inits = [by_pid[pid] for pid in pids if pid in by_pid]
        new = {proc.pid for key, proc in after.items() if key not in self.before}
        me = by_pid.get(os.getpid())
        cgroups = {init.cgroup for init in inits} - ({me.cgroup} if me else set())
        namespaces = {init.pidns for init in inits}
        outside = [p for p in after.values() if p.pidns not in namespaces and p is not me]
        named = [p for p in outside if any(self.marker in arg for arg in p.argv)]
        related = {p.pid for p in outside if p.cgroup in cgroups} | {p.pid for p in named}
        for init in inits:  # the run's own processes between an init and the host's init
            parent = by_pid.get(init.ppid)
            while parent is not None and parent.pid in new and parent.pid > 1:
                related.add(parent.pid)
                parent = by_pid.get(parent.ppid)
        for proc in outside:  # and their descendants
            ancestor, seen = by_pid.get(proc.ppid), set()
            while ancestor is not None and ancestor.pid not in seen and ancestor.pid > 1:
                if ancestor.pid in related:
                    related.add(proc.pid)
                    break
                seen.add(ancestor.pid)
                ancestor = by_pid.get(ancestor.ppid)
        running = sum(init.argv == SLEEP for init in inits)
        return running, [by_pid[pid] for pid in sorted(related) if not by_pid[pid].zombie]

    def worst(self) -> float | None:
        """The most bytes per sandbox of any run."""
        return max((sum(p.rss for p in extra) / self.count for _, extra in self.runs), default=None)

    def describe(self) -> str:
        if not self.runs:
            return "no run"
        _, extra = max(self.runs, key=lambda run: sum(p.rss for p in run[1]))
        ran = sum(running == self.count for running, _ in self.runs)
        shown = "; ".join(f"{p.pid} {' '.join(p.argv)[:60]} ({p.rss} B)" for p in extra[:3])
        return (
            f"all inits exec'd in {ran}/{len(self.runs)} runs; host processes there for them: "
            f"{len(extra)}, {sum(p.rss for p in extra)} B ({shown or 'none'})"
        )
