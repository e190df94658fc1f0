"""`sandman logs NAME [-n N] [--since WHEN] [-t] [-f] [--json]`: what the sandbox's init wrote to
stdout and stderr, over its starts (one file per start: kernel/loginstances.py).

No process writes a sandbox's log for it, so its lines carry no time of their own. What is known
is shown: with --timestamps, a line before each start's output says when that start began and
when its file was last written; lines that arrive while following get the time the file was last
written as they are read (within the 0.2 s poll of when they were). --since keeps the starts that
wrote at or after WHEN, whole.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Iterable
from typing import BinaryIO

from sandman.errors import StateError, UsageError
from sandman.kernel import logfile, loginstances
from sandman.kernel.loginstances import Instance, iso_time
from sandman.observe import logread
from sandman.paths import Paths

POLL = 0.2  # seconds between reads while following


def run(args: argparse.Namespace) -> int:
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    path = os.path.join(paths.log_dir, f"{args.name}.log")
    printer = _printer(args)
    with contextlib.ExitStack() as opened:
        try:
            history, current = _open_all(args.name, path, args.since, opened)
        except logfile.LogFileError as exc:
            raise StateError(path, str(exc.strerror)) from None
        for instance, chunks in _history(history, args.tail):
            printer.instance(instance)
            for chunk in chunks:
                printer.data(chunk, None)
        if not args.follow:
            printer.end()
            return 0
        offset = current.instance.size if current else 0
        follower = logread.Follower(path, current, offset)
        opened.callback(follower.close)
        with contextlib.suppress(KeyboardInterrupt):  # how one stops following: not a failure
            _follow(follower, printer)
    return 0


def _open_all(
    name: str, path: str, since: float | None, stack: contextlib.ExitStack
) -> tuple[list[logread.Opened], logread.Opened | None]:
    """The instances to show (oldest first, the current one last), open; and the current one,
    which a follow goes on reading, shown or not."""
    found = loginstances.instances(path)
    if not found:
        raise UsageError(f"no log for {name!r}: `{path}` does not exist")
    shown = []
    current = None
    for instance in found:
        opened = logread.open_instance(instance.path, instance.current)
        if opened is None:
            continue
        stack.callback(os.close, opened.fd)
        if instance.current:
            current = opened
        if since is None or opened.instance.modified >= since:
            shown.append(opened)
    return shown, current


def _history(
    opened: list[logread.Opened], tail: int | None
) -> list[tuple[Instance, Iterable[bytes]]]:
    """Each instance with what of it to print: whole, or with --tail the last N lines over all."""
    if tail is None:
        return [(o.instance, logread.body(o)) for o in opened]
    picked: list[tuple[Instance, Iterable[bytes]]] = []
    left = tail
    for item in reversed(opened):
        if left <= 0:
            break
        lines, _ = logread.last_lines(item, left)
        if lines:
            picked.append((item.instance, lines))
            left -= len(lines)
    return picked[::-1]


def _follow(follower: logread.Follower, printer: _Plain) -> None:
    while True:
        for instance, chunk in follower.poll():
            if instance is not None:
                printer.instance(instance)
            else:
                printer.data(chunk, follower.modified())
        printer.flush()
        time.sleep(POLL)


def _printer(args: argparse.Namespace) -> _Plain:
    out = sys.stdout.buffer
    if args.json:
        return _Json(out)
    return _Stamped(out, args.name) if args.timestamps else _Plain(out)


class _Plain:
    """The bytes as the sandbox wrote them."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out

    def instance(self, instance: Instance) -> None:
        del instance

    def data(self, chunk: bytes, when: float | None) -> None:
        del when
        self.out.write(chunk)

    def flush(self) -> None:
        self.out.flush()

    def end(self) -> None:
        self.flush()


class _Stamped(_Plain):
    """A line per start saying when it began and last wrote; followed lines with their time."""

    def __init__(self, out: BinaryIO, name: str) -> None:
        super().__init__(out)
        self.name = name
        self.at_line_start = True

    def instance(self, instance: Instance) -> None:
        if not self.at_line_start:
            self.out.write(b"\n")
            self.at_line_start = True
        self.out.write(f"{marker(self.name, instance)}\n".encode())

    def data(self, chunk: bytes, when: float | None) -> None:
        prefix = b"" if when is None else f"{iso_time(when)} ".encode()
        for line in logread.split_lines(chunk):
            if self.at_line_start:
                self.out.write(prefix)
            self.out.write(line)
            self.at_line_start = line.endswith(b"\n")


def marker(name: str, instance: Instance) -> str:
    begun = instance.started_at
    started = "at an unknown time" if begun is None else iso_time(begun)
    last = iso_time(instance.modified) if instance.size > instance.body else "nothing yet"
    which = "current" if instance.current else os.path.basename(instance.path)
    return f"-- {name} started {started}, last output {last} ({which}) --"


class _Json(_Plain):
    """One object per line: the line, its start's times and file, its own time when known."""

    def __init__(self, out: BinaryIO) -> None:
        super().__init__(out)
        self.current: Instance | None = None
        self.pending = b""  # a line not ended yet
        self.when: float | None = None

    def instance(self, instance: Instance) -> None:
        self._emit_pending()
        self.current = instance

    def data(self, chunk: bytes, when: float | None) -> None:
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        self.when = when
        for line in lines:
            self._emit(line)

    def end(self) -> None:
        self._emit_pending()
        self.flush()

    def _emit_pending(self) -> None:
        if self.pending:
            self._emit(self.pending)
            self.pending = b""

    def _emit(self, line: bytes) -> None:
        instance = self.current
        assert instance is not None
        record = {
            "line": line.decode(errors="replace"),
            "time": None if self.when is None else iso_time(self.when),
            "started_at": None if instance.started_at is None else iso_time(instance.started_at),
            "file": instance.path,
        }
        self.out.write(json.dumps(record).encode() + b"\n")
