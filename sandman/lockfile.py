"""The one flock helper: an exclusive lock on a file in a private dir, dropped by the kernel when
its holder dies, however it dies.

Only a file sandman made, 0600, in a dir only sandman's user can enter, is ever locked: flock
needs nothing but an open fd, so locking anything another user can open (a 0755 dir, a 0644 file)
lets that user hold it forever and stall every sandman that waits for it. A dir is never locked:
a user who opened it while it was still open keeps the fd after the chmod that closes it.

Imports `os` and `fcntl` only: every `apply`, no-op or not, takes a lock.
"""

from __future__ import annotations

import fcntl
import os
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from sandman.errors import SandmanError
from sandman.private_dirs import private_dir

_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NOCTTY | os.O_CLOEXEC


class LockBusyError(SandmanError):
    """The lock is held by another process and the caller would not wait."""


class LockFileError(SandmanError):
    """The lock file cannot be opened, or is not one only sandman's user can open."""


@contextmanager
def held(
    path: str,
    what: str,
    *,
    wait: bool = True,
    on_wait: Callable[[], None] | None = None,
    busy: Callable[[str], SandmanError] = LockBusyError,
) -> Iterator[None]:
    """Hold an exclusive flock on PATH, made 0600 in its dir (made private first, see
    private_dirs; WHAT names that dir in errors). Busy and not WAIT: BUSY(message) is raised;
    busy and WAIT: ON_WAIT is called, then the lock waited for."""
    private_dir(os.path.dirname(path), what)
    fd = _open(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not wait:
                raise busy(f"another sandman holds `{path}`") from None
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _open(path: str) -> int:
    try:
        fd = os.open(path, _FLAGS, 0o600)
    except OSError as exc:
        raise LockFileError(f"cannot open the lock file `{path}`: {exc.strerror}") from exc
    try:
        info = os.fstat(fd)
        mine = os.geteuid()
        if not stat.S_ISREG(info.st_mode) or info.st_uid != mine:
            raise LockFileError(
                f"`{path}` is not a file of sandman's user (uid {mine}): another user could "
                f"hold it; remove it, sandman makes it again"
            )
        if stat.S_IMODE(info.st_mode) & 0o077:
            os.fchmod(fd, 0o600)
    except OSError as exc:
        os.close(fd)
        raise LockFileError(f"cannot check the lock file `{path}`: {exc.strerror}") from exc
    except BaseException:
        os.close(fd)
        raise
    return fd
