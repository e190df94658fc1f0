"""Reading a sandbox's log instances (kernel/loginstances.py): their last lines, their bodies,
and the current one as it grows and is replaced by a new start's file.

Every file is opened with logfile's refusals (never through a planted link); reads are by
offset (pread), so one fd serves the history and then the follow of the current instance.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import NamedTuple

from sandman.kernel import logfile, loginstances
from sandman.kernel.loginstances import Instance

_BLOCK = 65536


class Opened(NamedTuple):
    """An instance's file, open for reading."""

    fd: int
    instance: Instance


def open_instance(path: str, current: bool) -> Opened | None:
    """The instance whose file is at PATH, open; None when it is gone."""
    try:
        fd = logfile.open_for_reading(path)
    except FileNotFoundError:
        return None
    try:
        return Opened(fd, loginstances.describe(fd, path, current))
    except BaseException:
        os.close(fd)
        raise


def body(opened: Opened, start: int | None = None) -> Iterator[bytes]:
    """What the sandbox wrote into the file, from `start` (default: after the header) to the
    size it had when it was opened."""
    offset = opened.instance.body if start is None else start
    while offset < opened.instance.size:
        chunk = os.pread(opened.fd, min(_BLOCK, opened.instance.size - offset), offset)
        if not chunk:
            return
        offset += len(chunk)
        yield chunk


def last_lines(opened: Opened, count: int) -> tuple[list[bytes], int]:
    """The last `count` lines of the instance's body (a final line without its newline counts)
    and the offset where the first of them begins; read backwards, block by block."""
    start, end = opened.instance.body, opened.instance.size
    if count <= 0 or end <= start:
        return [], end
    data, offset = b"", end
    # One newline more than lines wanted marks where the first of them begins.
    wanted = count + (0 if _ends_without_newline(opened.fd, end) else 1)
    while offset > start and data.count(b"\n") < wanted:
        size = min(_BLOCK, offset - start)
        offset -= size
        data = os.pread(opened.fd, size, offset) + data
    lines = split_lines(data)[-count:]
    return lines, end - sum(len(line) for line in lines)


def split_lines(data: bytes) -> list[bytes]:
    """Lines with their newline, the last one without when it has none; only `\n` ends a line
    (a `\r` of a progress bar does not, as a terminal would not scroll for it)."""
    lines = [line + b"\n" for line in data.split(b"\n")]
    lines[-1] = lines[-1][:-1]
    return lines if lines[-1] else lines[:-1]


def _ends_without_newline(fd: int, end: int) -> bool:
    return os.pread(fd, 1, end - 1) != b"\n"


class Follower:
    """The current instance's file as it grows; when a new start replaces it (another inode at
    the path), what the old one still had, then the new one from its first byte."""

    def __init__(self, path: str, opened: Opened | None, offset: int) -> None:
        self.path = path
        self.opened = opened
        self.offset = offset

    def poll(self) -> Iterator[tuple[Instance | None, bytes]]:
        """New data as (None, bytes); a new instance as (its Instance, b"") before its data."""
        if self.opened is not None:
            yield from self._read()
            if not self._replaced():
                return
            yield from self._read()  # what the last writer of the old one wrote meanwhile
            os.close(self.opened.fd)
            self.opened = None
        self.opened = open_instance(self.path, current=True)
        if self.opened is not None:
            self.offset = self.opened.instance.body
            yield self.opened.instance, b""
            yield from self._read()

    def modified(self) -> float | None:
        """When the followed file was last written (the kernel keeps it at each write)."""
        return None if self.opened is None else os.fstat(self.opened.fd).st_mtime

    def _read(self) -> Iterator[tuple[Instance | None, bytes]]:
        assert self.opened is not None
        while chunk := os.pread(self.opened.fd, _BLOCK, self.offset):
            self.offset += len(chunk)
            yield None, chunk

    def _replaced(self) -> bool:
        """Another file (or none) is at the path now: a new start rotated ours away."""
        assert self.opened is not None
        try:
            now = os.lstat(self.path)
        except FileNotFoundError:
            return False  # between the rotation and the new file: look again next time
        mine = os.fstat(self.opened.fd)
        return (now.st_dev, now.st_ino) != (mine.st_dev, mine.st_ino)

    def close(self) -> None:
        if self.opened is not None:
            os.close(self.opened.fd)
            self.opened = None
