"""One apply at a time per state dir: an flock that the kernel drops when its holder dies."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sandman.lockfile import LockBusyError, held

__all__ = ["LockBusyError", "state_lock"]


@contextmanager
def state_lock(
    state_dir: str, wait: bool = True, on_wait: Callable[[], None] | None = None
) -> Iterator[None]:
    """`STATE_DIR/lock`, the state dir made (or kept) 0700 first."""
    path = os.path.join(state_dir, "lock")

    def busy(_message: str) -> LockBusyError:
        return LockBusyError(f"another sandman apply holds `{path}`; try again, or drop --no-wait")

    with held(path, "state dir (--state-dir)", wait=wait, on_wait=on_wait, busy=busy):
        yield
