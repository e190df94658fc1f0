"""Reading a small file of a running sandbox from the host: its /etc/passwd, say.

The host's root reads there, and the sandbox chooses what its paths lead to: a symlink to a host
path, a FIFO that would block the reader, a device whose opening acts (a watchdog starts on
open). So the path is resolved inside the sandbox's root (openat2 RESOLVE_IN_ROOT from
/proc/PID/root, no magic links), opened O_PATH, which opens nothing, and only a regular file is
then reopened for reading, through its fd, up to a bound.
"""

from __future__ import annotations

import os
import stat

from sandman.kernel import syscalls as sc

MAX_BYTES = 1024 * 1024
_RESOLVE = sc.RESOLVE_IN_ROOT | sc.RESOLVE_NO_MAGICLINKS


def kind(pid: int, path: str) -> str | None:
    """ "file", "directory" or "other" for PATH inside the sandbox of PID; None when missing."""
    try:
        fd = _open_path(pid, path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    if stat.S_ISREG(mode):
        return "file"
    return "directory" if stat.S_ISDIR(mode) else "other"


def read(pid: int, path: str, limit: int = MAX_BYTES) -> bytes | None:
    """The first `limit` bytes of the regular file at PATH inside the sandbox of PID; None
    when it is missing or not a regular file."""
    try:
        fd = _open_path(pid, path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        # Reopening an O_PATH fd opens that very inode: nothing can be swapped in between.
        readable = os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    finally:
        os.close(fd)
    try:
        return os.read(readable, limit)
    finally:
        os.close(readable)


def _open_path(pid: int, path: str) -> int:
    root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return sc.openat2(root, path.lstrip("/") or ".", os.O_PATH, resolve=_RESOLVE)
    finally:
        os.close(root)
