"""Progress of an apply: a callback object handed to the applier; library code never prints."""

from __future__ import annotations

import json
import sys
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    def begin(self, total: int) -> None:
        """An apply of `total` actions starts."""
        ...

    def start(self, what: str) -> None: ...

    def done(self, what: str, seconds: float) -> None: ...

    def failed(self, what: str, error: BaseException) -> None: ...

    def note(self, message: str) -> None: ...


class Silent:
    def begin(self, total: int) -> None:
        pass

    def start(self, what: str) -> None:
        pass

    def done(self, what: str, seconds: float) -> None:
        pass

    def failed(self, what: str, error: BaseException) -> None:
        pass

    def note(self, message: str) -> None:
        pass


class Lines:
    """One line per action as it starts and as it ends, with its duration, on stderr (journald
    keeps it as is). On a terminal, an apply of many actions also keeps a status line at the
    bottom, `[12/50] + sandbox/web: create ...`, redrawn in place."""

    STATUS_FROM = 5  # actions; below that the lines alone say enough

    def __init__(self, stream: TextIO | None = None, status: bool | None = None) -> None:
        self.stream = stream or sys.stderr
        self.status = self.stream.isatty() if status is None else status
        self.total = 0
        self.finished = 0
        self._shown = False

    def begin(self, total: int) -> None:
        self.total = total
        self.finished = 0

    def start(self, what: str) -> None:
        self._line(f"{what} ...")
        self._status(what)

    def done(self, what: str, seconds: float) -> None:
        self.finished += 1
        self._line(f"{what}: done in {seconds * 1000:.0f} ms")

    def failed(self, what: str, error: BaseException) -> None:
        self.finished += 1
        self._line(f"{what}: FAILED: {error}")

    def note(self, message: str) -> None:
        self._line(f"  {message}")

    def _line(self, text: str) -> None:
        self._clear()
        self.stream.write(text + "\n")
        self.stream.flush()

    def _status(self, what: str) -> None:
        if not self.status or self.total < self.STATUS_FROM:
            return
        self.stream.write(f"[{self.finished + 1}/{self.total}] {what}")
        self.stream.flush()
        self._shown = True

    def _clear(self) -> None:
        if self._shown:
            self.stream.write("\r\033[K")
            self._shown = False


class JsonEvents:
    """One JSON object per event on stdout, for scripts (`apply --json`)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

    def begin(self, total: int) -> None:
        self._emit(event="begin", actions=total)

    def _emit(self, **event: object) -> None:
        self.stream.write(json.dumps({"time": round(time.time(), 3), **event}) + "\n")
        self.stream.flush()

    def start(self, what: str) -> None:
        self._emit(event="start", action=what)

    def done(self, what: str, seconds: float) -> None:
        self._emit(event="done", action=what, seconds=round(seconds, 4))

    def failed(self, what: str, error: BaseException) -> None:
        self._emit(event="failed", action=what, error=str(error))

    def note(self, message: str) -> None:
        self._emit(event="note", message=message)
