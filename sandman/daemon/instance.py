"""One daemon per state dir: two would race each other's restarts and counts."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from sandman.daemon.restarts import daemon_dir
from sandman.errors import SandmanError
from sandman.lockfile import held


class DaemonRunningError(SandmanError):
    pass


@contextmanager
def only_daemon(state_dir: str) -> Iterator[None]:
    """Held while the daemon runs; the kernel drops it when the daemon dies, however it dies."""
    path = os.path.join(daemon_dir(state_dir), "lock")

    def busy(_message: str) -> DaemonRunningError:
        return DaemonRunningError(
            f"another sandman daemon holds `{path}`: one daemon per state dir"
        )

    with held(path, "daemon dir", wait=False, busy=busy):
        yield


def daemon_running(state_dir: str) -> bool:
    """Whether a daemon holds the state dir now: its lock is taken. Looks only; creates nothing."""
    import fcntl

    path = os.path.join(daemon_dir(state_dir), "lock")
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False
