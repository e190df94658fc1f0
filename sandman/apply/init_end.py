"""Ending a sandbox's init: its stop signal through a pidfd, the wait, and how it ended.

The pidfd names the init for the whole stop: a signal through it never reaches a process that
took a recycled PID, and its holder learns the init's wait status from the kernel once the
host's init has reaped it (kernel/pidfd_exit.py), which is how `sandman stop` can tell an init
that ended by its stop signal from one its cgroup's kill took.
"""

from __future__ import annotations

import contextlib
import os
import select
import time

from sandman.kernel import pidfd_exit
from sandman.kernel import syscalls as sc
from sandman.observe import procs

# How long a stop waits, after the kill, for the host's init to reap the sandbox's init so that
# the kernel gives its status. systemd reaps at once; some container hosts' inits reap on a
# timer (this project's development host: every 2 s), which this bound still waits out.
REAP_WAIT = 3.0


class InitEnd:
    """One init being stopped, named by a pidfd held until close()."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.pidfd: int | None
        try:
            self.pidfd = sc.pidfd_open(pid)
        except ProcessLookupError:
            self.pidfd = None

    def ask(self, signal_number: int, timeout: float) -> None:
        """Send the stop signal, always, then wait up to `timeout` for the init to end, unless
        the kernel dropped the signal (procs.receives): waiting would then only delay the kill."""
        if self.pidfd is None:
            return
        with contextlib.suppress(ProcessLookupError):
            sc.pidfd_send_signal(self.pidfd, signal_number)
        if procs.receives(self.pid, signal_number):
            select.select([self.pidfd], [], [], timeout)

    def status(self, wait: float = REAP_WAIT) -> int | None:
        """The init's wait status once it is gone and reaped; None when the kernel does not
        tell (before Linux 6.15) or the reap takes longer than `wait`."""
        deadline = time.monotonic() + wait
        while self.pidfd is not None:
            try:
                found = pidfd_exit.exit_status(self.pidfd)
            except OSError:
                return None
            if found is not None or time.monotonic() >= deadline:
                return found
            time.sleep(0.01)
        return None

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
            self.pidfd = None
