"""Restarts of inits: the backoff between them, and their counts kept under the state dir.

A sandbox whose init keeps dying is restarted after 0.1 s, then 0.2 s, 0.4 s ... up to 30 s; an
init that stayed up STABLE_AFTER seconds ends the streak, and its next exit waits 0.1 s again.
The counts live in STATE_DIR/daemon/restarts.json, so that `status` shows them (read with json
alone: status stays fast) and a restarted daemon goes on counting; a reboot empties /run and
starts them from zero, as systemd's NRestarts does.
"""

from __future__ import annotations

import contextlib
import json
import os

from sandman.atomic_json import write_atomically

FIRST_DELAY = 0.1  # seconds
MAX_DELAY = 30.0
STABLE_AFTER = 10.0  # seconds up that end a crash streak


def delay(streak: int) -> float:
    """Seconds to wait before restarting an init that died after `streak` restarts in a row."""
    return min(FIRST_DELAY * float(2 ** min(streak, 32)), MAX_DELAY)


class Backoff:
    """Restart attempts per sandbox; times are time.monotonic() seconds, given by the caller.

    Every attempt lengthens the streak; an init that came up after the last attempt and stayed
    up STABLE_AFTER seconds ends it. A restart that fails (no init came up) keeps the streak, so
    a sandbox that cannot start is retried ever more slowly, never in a tight loop.

    A plain class: `status` imports this module for the counts, and dataclasses cost it 18 ms."""

    def __init__(self) -> None:
        self.streaks: dict[str, int] = {}
        self.attempts: dict[str, float] = {}
        self.started: dict[str, float] = {}

    def next_delay(self, name: str, now: float) -> float:
        """A restart of `name` is to be scheduled at `now`: how long to wait first."""
        attempt, up = self.attempts.get(name), self.started.get(name)
        stable = attempt is None or (up is not None and up >= attempt and now - up >= STABLE_AFTER)
        streak = 0 if stable else self.streaks.get(name, 0)
        self.streaks[name] = streak + 1
        self.attempts[name] = now
        return delay(streak)

    def up(self, name: str, now: float) -> None:
        """A new init of `name` runs since `now`."""
        self.started[name] = now

    def forget(self, name: str) -> None:
        for table in (self.streaks, self.attempts, self.started):
            table.pop(name, None)


def daemon_dir(state_dir: str) -> str:
    return os.path.join(state_dir, "daemon")


def counts_path(state_dir: str) -> str:
    return os.path.join(daemon_dir(state_dir), "restarts.json")


def read_counts(state_dir: str) -> dict[str, int]:
    """Restarts per sandbox; nothing recorded (no daemon ran, or a damaged file) reads as none."""
    try:
        with open(counts_path(state_dir), encoding="utf-8") as handle:
            data = json.load(handle)
        return {str(k): int(v) for k, v in dict(data["restarts"]).items()}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def write_counts(state_dir: str, counts: dict[str, int]) -> None:
    """Atomically, as records are: a reader sees the old counts or the new ones."""
    path = counts_path(state_dir)
    if not counts:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    write_atomically(path, {"version": 1, "restarts": counts})
