"""Log lines journald keeps as they are: one line per event on stderr, with a `<N>` priority prefix
(sd-daemon(3)), which journald turns into the entry's priority and strips.

No `sandman:` before the text: journald already names the unit and the process (`sandman[123]:`).
"""

from __future__ import annotations

import sys
from typing import TextIO

EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, DEBUG = range(8)


def lines(priority: int, text: str) -> str:
    """Every line of `text` as an event of its own: journald keeps a line, not a paragraph."""
    return "".join(f"<{priority}>{line}\n" for line in text.splitlines() if line.strip())


class Journal:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr

    def log(self, priority: int, text: str) -> None:
        self.stream.write(lines(priority, text))
        self.stream.flush()

    def error(self, text: str) -> None:
        self.log(ERR, text)

    def warning(self, text: str) -> None:
        self.log(WARNING, text)

    def notice(self, text: str) -> None:
        self.log(NOTICE, text)

    def info(self, text: str) -> None:
        self.log(INFO, text)

    def debug(self, text: str) -> None:
        self.log(DEBUG, text)


class JournalProgress:
    """The Progress of a pass (sandman.progress.Progress) as journal lines."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def begin(self, total: int) -> None:
        self.journal.debug(f"{total} actions to run")

    def start(self, what: str) -> None:
        self.journal.debug(f"{what} ...")

    def done(self, what: str, seconds: float) -> None:
        self.journal.info(f"{what}: done in {seconds * 1000:.0f} ms")

    def failed(self, what: str, error: BaseException) -> None:
        self.journal.error(f"{what}: FAILED: {error}")

    def note(self, message: str) -> None:
        self.journal.notice(message)
