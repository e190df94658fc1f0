"""When the next pass is due, and which: pure bookkeeping over time.monotonic() seconds.

A full pass reads the whole unit directory and repairs everything (start, SIGHUP, a unit file
changed, the drift period). A targeted pass restarts one sandbox whose init exited, once its
backoff is over. Unit file events are debounced: an editor's write, rename and chmod make one
pass, and a stream of events still gets one pass every MAX_DEFER debounce periods.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_DEFER = 10  # debounce periods a stream of unit file events may postpone its pass


@dataclass(frozen=True)
class Pass:
    """A reconcile pass to run: why, and for which sandbox (None: every object)."""

    reason: str
    target: str | None = None  # a sandbox, or None for the whole directory


@dataclass
class Schedule:
    """When the next passes are due: debounced unit changes, restarts, the drift period."""

    drift_interval: float  # seconds between drift checks; 0: none
    debounce: float  # seconds
    now: float
    _full: tuple[float, str] | None = None  # due time, reason
    _first_change: float | None = None
    _targets: dict[str, float] = field(default_factory=dict)
    _drift_at: float | None = None

    def __post_init__(self) -> None:
        self._drift_at = self.now + self.drift_interval if self.drift_interval > 0 else None

    def full_now(self, now: float, reason: str) -> None:
        self._full = (now, reason)

    def units_changed(self, now: float, what: str) -> None:
        if self._first_change is None:
            self._first_change = now
        latest = self._first_change + MAX_DEFER * self.debounce
        due = min(now + self.debounce, latest)
        if self._full is None or self._full[0] > now:
            self._full = (due, f"unit files changed ({what})")

    def restart(self, name: str, at: float) -> None:
        self._targets[name] = min(at, self._targets.get(name, at))

    def has(self, name: str) -> bool:
        return name in self._targets

    def forget(self, name: str) -> None:
        self._targets.pop(name, None)

    def timeout(self, now: float) -> float | None:
        """Seconds until the next pass is due; None: nothing is scheduled."""
        times = list(self._targets.values())
        times += [
            t for t in (self._drift_at, self._full[0] if self._full else None) if t is not None
        ]
        return max(0.0, min(times) - now) if times else None

    def due(self, now: float) -> list[Pass]:
        """The passes to run now; a full pass takes the place of every other."""
        full = self._full is not None and self._full[0] <= now
        drift = self._drift_at is not None and self._drift_at <= now
        if full or drift:
            reason = self._full[1] if full and self._full else "drift check"
            self._full, self._first_change = None, None
            self._targets.clear()
            if self.drift_interval > 0:
                self._drift_at = now + self.drift_interval
            return [Pass(reason)]
        ready = sorted(name for name, at in self._targets.items() if at <= now)
        for name in ready:
            del self._targets[name]
        return [Pass("init exited", name) for name in ready]
