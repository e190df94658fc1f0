"""Progress of an apply: a callback object handed to the applier; library code never prints."""

from __future__ import annotations

import json
import sys
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    def start(self, what: str) -> None: ...

    def done(self, what: str, seconds: float) -> None: ...

    def failed(self, what: str, error: BaseException) -> None: ...

    def note(self, message: str) -> None: ...


class Silent:
    def start(self, what: str) -> None:
        pass

    def done(self, what: str, seconds: float) -> None:
        pass

    def failed(self, what: str, error: BaseException) -> None:
        pass

    def note(self, message: str) -> None:
        pass


class Lines:
    """One line per action as it ends, with its duration, on stderr (journald keeps it as is)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def start(self, what: str) -> None:
        self.stream.write(f"{what} ...\n")
        self.stream.flush()

    def done(self, what: str, seconds: float) -> None:
        self.stream.write(f"{what}: done in {seconds * 1000:.0f} ms\n")

    def failed(self, what: str, error: BaseException) -> None:
        self.stream.write(f"{what}: FAILED: {error}\n")

    def note(self, message: str) -> None:
        self.stream.write(f"  {message}\n")


class JsonEvents:
    """One JSON object per event on stdout, for scripts (`apply --json`)."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout

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
