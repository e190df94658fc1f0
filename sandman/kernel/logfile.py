"""Opening a sandbox's log file (`LOG_DIR/NAME.log`) without being led to another file.

The log is written by sandman running as root, with what the sandbox prints: a symlink planted
at the log's path would make that output append to any file of the host (/etc/shadow), and a
hard link to another file would do the same without any link to follow. So a log is opened with
O_NOFOLLOW and O_NONBLOCK (a FIFO planted there neither blocks apply nor takes the output), must
then be a regular file with one link, and is made root's, mode 0640, on the fd itself.
"""

from __future__ import annotations

import errno
import os
import stat

LOG_MODE = 0o640
_COMMON = os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


class LogFileError(OSError):
    """The log's path holds something sandman will not write to or read from."""

    def __str__(self) -> str:
        return f"{self.filename}: {self.strerror}"


def open_for_append(path: str, exclusive: bool = False) -> int:
    """An fd appending to the log at PATH, made when missing (with `exclusive`, only made:
    FileExistsError when something is there); refused when PATH is a symlink, not a regular
    file, or a file with another name elsewhere (a hard link)."""
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | _COMMON | (os.O_EXCL if exclusive else 0)
    fd = _open(path, flags, LOG_MODE)
    try:
        _check(fd, path)
        # A file left by someone else becomes root's and private before a byte is written.
        os.fchown(fd, os.geteuid(), os.getegid())
        os.fchmod(fd, LOG_MODE)
        _blocking(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_for_reading(path: str) -> int:
    """An fd reading the log at PATH, with the same refusals as `open_for_append`; a missing
    log raises FileNotFoundError."""
    fd = _open(path, os.O_RDONLY | _COMMON, 0)
    try:
        _check(fd, path)
        _blocking(fd)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open(path: str, flags: int, mode: int) -> int:
    try:
        return os.open(path, flags, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink as the last component
            raise _refused(path, "is a symlink") from None
        if exc.errno == errno.ENXIO:  # a FIFO with no reader, opened for writing
            raise _refused(path, "is a FIFO, not a regular file") from None
        if exc.errno == errno.EISDIR:
            raise _refused(path, "is a directory") from None
        raise


def _check(fd: int, path: str) -> None:
    info = os.fstat(fd)
    if stat.S_ISDIR(info.st_mode):
        raise _refused(path, "is a directory")
    if stat.S_ISFIFO(info.st_mode):
        raise _refused(path, "is a FIFO, not a regular file")
    if not stat.S_ISREG(info.st_mode):
        raise _refused(path, "is not a regular file")
    if info.st_nlink != 1:
        raise _refused(path, f"is a file with {info.st_nlink} links (a hard link to another file)")


def _blocking(fd: int) -> None:
    os.set_blocking(fd, True)


def _refused(path: str, what: str) -> LogFileError:
    return LogFileError(
        errno.EPERM,
        f"the log file {what}; sandman writes a sandbox's output only to a file of its own. "
        f"Remove it (rm {path}) and apply again",
        path,
    )
