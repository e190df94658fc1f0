"""One daemon per state dir: two would race each other's restarts and counts."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager

from sandman.daemon.restarts import daemon_dir
from sandman.errors import SandmanError


class DaemonRunningError(SandmanError):
    pass


@contextmanager
def only_daemon(state_dir: str) -> Iterator[None]:
    """Held while the daemon runs; the kernel drops it when the daemon dies, however it dies."""
    directory = daemon_dir(state_dir)
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, "lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DaemonRunningError(
                f"another sandman daemon holds `{path}`: one daemon per state dir"
            ) from None
        yield
    finally:
        os.close(fd)
