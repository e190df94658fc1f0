"""One apply at a time per state dir: an flock that the kernel drops when its holder dies."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sandman.errors import SandmanError


class LockBusyError(SandmanError):
    pass


@contextmanager
def state_lock(
    state_dir: str, wait: bool = True, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    os.makedirs(state_dir, mode=0o700, exist_ok=True)
    fd = os.open(os.path.join(state_dir, "lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise LockBusyError(
                    f"another sandman apply holds `{state_dir}/lock`; try again, or drop --no-wait"
                ) from None
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)
