"""Which host processes a started sandbox costs: a before/after census of /proc.

`snapshot()` reads every process (kernel threads left out). `census(before, after, ...)`
takes the PIDs of the inits a run started (from the tool's own state: sandman's records, `crun
state`) and finds the host processes that are there because of them, outside their pid
namespaces:

- the inits' ancestors that the run made (a monitor or shim between the init and the host's init);
- processes whose command line names `marker` (the benchmark's temporary directory, in every
  path the tools are given): a sandman CLI process still alive, a daemon a tool left behind;
- processes in an init's cgroup that are not in its pid namespace (a helper left in the cgroup);
- everything descending from one of those.

Their resident memory (VmRSS) is the host memory the sandboxes cost beyond their own processes.
Zombies hold none and are not counted, whatever made them (a parent that exits leaves its exited
children to the host's init, which may reap them late); nor are new processes unrelated to the
run (other work on the machine), so that a busy host does not pass for a cost.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

_PF_KTHREAD = 0x00200000


@dataclass(frozen=True)
class Proc:
    pid: int
    ppid: int
    start: int  # clock ticks after boot: with the PID, names one process for good
    state: str  # R, S, D, Z, ...
    comm: str
    argv: tuple[str, ...]
    rss: int  # bytes
    pidns: int  # inode of its pid namespace; 0 when unreadable (e.g. a protected PID 1)
    cgroup: str  # /proc/PID/cgroup

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")

    def describe(self) -> str:
        shown = " ".join(self.argv) or f"[{self.comm}]"
        if len(shown) > 60:
            shown = shown[:57] + "..."
        return f"{self.pid} {shown} ({'zombie' if self.zombie else f'{self.rss} B'})"


Snapshot = Mapping[tuple[int, int], Proc]


def _read(path: str) -> bytes:
    with open(path, "rb") as handle:
        return handle.read()


def read_proc(pid: int) -> Proc | None:
    """One process, or None when it is gone or a kernel thread."""
    base = f"/proc/{pid}"
    try:
        stat = _read(f"{base}/stat").decode(errors="replace")
        cmdline = _read(f"{base}/cmdline")
        status = _read(f"{base}/status").decode(errors="replace")
        cgroup = _read(f"{base}/cgroup").decode(errors="replace")
    except OSError:
        return None
    try:
        pidns = os.stat(f"{base}/ns/pid").st_ino
    except OSError:
        pidns = 0
    comm = stat[stat.find("(") + 1 : stat.rfind(")")]
    # After "(comm) ": state ppid pgrp session tty tpgid flags ... starttime (field 22).
    fields = stat[stat.rfind(")") + 2 :].split()
    if int(fields[6]) & _PF_KTHREAD:
        return None
    rss = 0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) * 1024
    argv = tuple(part.decode(errors="replace") for part in cmdline.split(b"\0")[:-1])
    return Proc(pid, int(fields[1]), int(fields[19]), fields[0], comm, argv, rss, pidns, cgroup)


def snapshot() -> dict[tuple[int, int], Proc]:
    procs = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            proc = read_proc(int(entry))
            if proc is not None:
                procs[(proc.pid, proc.start)] = proc
    return procs


@dataclass(frozen=True)
class Census:
    """What a run left on the host, taken right after the command returned."""

    count: int  # sandboxes the run started
    running: int  # of the inits the tool reports, how many run the command (exec done)
    extra: tuple[Proc, ...]  # live host processes there because of the sandboxes

    @property
    def extra_bytes(self) -> int:
        return sum(proc.rss for proc in self.extra)

    @property
    def bytes_per_sandbox(self) -> float:
        return self.extra_bytes / self.count if self.count else 0.0

    @property
    def all_running(self) -> bool:
        return self.running == self.count


def census(
    before: Snapshot,
    after: Snapshot,
    *,
    init_pids: Iterable[int],
    command: Sequence[str],
    marker: str,
    count: int,
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
    for proc in outside:
        if _descends(proc, related, by_pid):
            related.add(proc.pid)
    found = [by_pid[pid] for pid in sorted(related)]
    return Census(
        count=count,
        running=sum(init.argv == tuple(command) for init in inits),
        extra=tuple(proc for proc in found if not proc.zombie),
    )


def _descends(proc: Proc, ancestors: set[int], by_pid: Mapping[int, Proc]) -> bool:
    seen = set()
    current = by_pid.get(proc.ppid)
    while current is not None and current.pid not in seen and current.pid > 1:
        if current.pid in ancestors:
            return True
        seen.add(current.pid)
        current = by_pid.get(current.ppid)
    return False
