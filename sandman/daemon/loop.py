"""The daemon's main loop: a pass at start, READY=1, then a pass whenever one is due.

Passes run one at a time in this process, between waits; a signal only wakes the wait, so
SIGTERM never cuts a pass in half. Inits are watched by pidfd: the daemon is not their parent
(they belong to the host's init, as after `apply`), and keeps no process per sandbox.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field

from sandman.daemon import exits, lastgood, restarts
from sandman.daemon.instance import only_daemon
from sandman.daemon.journal import Journal, JournalProgress
from sandman.daemon.notify import Notifier
from sandman.daemon.passes import Passes
from sandman.daemon.schedule import Pass, Schedule
from sandman.daemon.watch import Event, Init, Watcher
from sandman.errors import StateError
from sandman.kernel import pidfd_exit
from sandman.observe import procs
from sandman.observe.records import KIND_DIRS, read_records
from sandman.paths import Paths

ON_STOP = ("keep", "stop")


@dataclass(frozen=True)
class Options:
    """The daemon's command line options."""

    directory: str
    paths: Paths
    drift_interval: float = 30.0  # seconds; 0 turns the periodic drift check off
    debounce: float = 0.2  # seconds
    on_stop: str = "keep"  # "keep": sandboxes run on; "stop": destroy every applied object


@dataclass(frozen=True)
class Sandbox:
    """A sandbox as its record says: its init, whether that runs, its restart policy, whether
    `sandman stop` stopped it (then it has no init, and is never restarted), and whether it is
    tainted: being recreated or started by another sandman (or cut short doing so)."""

    init: Init
    alive: bool
    restart: str
    stopped: bool = False
    tainted: bool = False

    def restarts(self) -> bool:
        """Its init is dead and the daemon is to start it again. Not a tainted one: whoever
        tainted it is making its new init now (an apply, `sandman start`); if that was cut
        short, the next full pass recreates it, whatever its policy."""
        return not (self.alive or self.stopped or self.tainted) and self.restart != "no"


@dataclass
class Daemon:
    """The daemon: its options, journal, notifier and restart backoff."""

    options: Options
    journal: Journal = field(default_factory=Journal)
    notifier: Notifier = field(default_factory=Notifier.from_environment)
    backoff: restarts.Backoff = field(default_factory=restarts.Backoff)

    def __post_init__(self) -> None:
        self.state_dir = self.options.paths.state_dir
        self.passes = Passes(self.options.directory, self.options.paths, self.journal)
        self.counts = restarts.read_counts(self.state_dir)
        self.unwatched = False  # the unit directory could not be watched

    def run(self) -> int:
        with only_daemon(self.state_dir):
            watcher = Watcher(self.options.directory)
            try:
                self._serve(watcher)
                # While the watcher still holds the signals: a second SIGTERM must not cut the
                # teardown short.
                self._stop()
            finally:
                watcher.close()
                self.notifier.close()
        return 0

    def _serve(self, watcher: Watcher) -> None:
        options = self.options
        self.journal.info(
            f"watching {options.directory} (state {self.state_dir}; drift check "
            f"{f'every {options.drift_interval:g} s' if options.drift_interval else 'off'}; "
            f"on stop: {options.on_stop})"
        )
        self._watch_directory(watcher)
        schedule = Schedule(options.drift_interval, options.debounce, time.monotonic())
        self._pass(Pass("start"), watcher, schedule)
        self.notifier.send(READY=1, STATUS=self._status())
        while True:
            events = watcher.wait(schedule.timeout(time.monotonic()))
            self._record_exits(watcher.collect_exits())
            if not self._handle(events, watcher, schedule):
                return
            reloading = any(e.kind == "signal" and int(e.name) == signal.SIGHUP for e in events)
            for job in schedule.due(time.monotonic()):
                self._pass(job, watcher, schedule)
            if reloading:
                self.notifier.send(READY=1, STATUS=self._status())

    # -- events

    def _handle(self, events: list[Event], watcher: Watcher, schedule: Schedule) -> bool:
        """Turn events into scheduled passes; False when a signal asks the daemon to stop."""
        now = time.monotonic()
        records_changed = False
        for event in events:
            if event.kind == "signal":
                if int(event.name) != signal.SIGHUP:
                    self.journal.info(f"{signal.Signals(int(event.name)).name}: stopping")
                    return False
                self.journal.info("SIGHUP: reloading the unit files")
                usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
                self.notifier.send(RELOADING=1, MONOTONIC_USEC=usec)
                self._watch_directory(watcher)
                schedule.full_now(now, "reload (SIGHUP)")
            elif event.kind == "records":
                records_changed = True
            elif event.kind == "units":
                if event.lost_watch:
                    self.journal.warning(f"{self.options.directory}: gone or moved; not watched")
                    self.unwatched = True
                schedule.units_changed(now, event.name)
            else:
                self._exited(event.name)
        if records_changed:
            self._watch_inits(watcher)
        self._schedule_restarts(schedule, now)
        return True

    def _exited(self, name: str) -> None:
        sandbox = self._sandboxes().get(name)
        if sandbox is not None and sandbox.stopped:
            # `sandman stop` marks the record before it signals the init: never restarted.
            self.journal.info(f"sandbox/{name}: stopped (sandman stop); not restarted")
            return
        pid = f" (pid {sandbox.init.pid})" if sandbox else ""
        policy = sandbox.restart if sandbox else "no"
        self.journal.warning(f"sandbox/{name}: init{pid} exited; restart = {policy!r}")

    def _record_exits(self, ended: list[tuple[str, Init, int | None]]) -> None:
        """How inits ended, for `status` and `show` (daemon/exits.py), and for the journal."""
        if not ended:
            return
        known = exits.read_exits(self.state_dir)
        for name, init, status in ended:
            if status is None:
                self.journal.info(
                    f"sandbox/{name}: how the init (pid {init.pid}) ended is unknown (a kernel "
                    "before 6.15, or the host's init did not reap it)"
                )
                continue
            known[name] = exits.Exit(init.pid, init.start_time, status, time.time())
            how = ", ".join(f"{k} {v}" for k, v in pidfd_exit.describe(status).items())
            self.journal.info(f"sandbox/{name}: the init (pid {init.pid}) ended: {how}")
        applied = self._sandboxes()
        try:
            exits.write_exits(self.state_dir, {n: e for n, e in known.items() if n in applied})
        except OSError as exc:
            self.journal.warning(f"exit statuses not saved: {exc}")

    def _watch_inits(self, watcher: Watcher) -> dict[str, Sandbox]:
        """Watch the inits the records name now (a stopped sandbox has none); report those
        already gone. Returns the sandboxes as their records say."""
        sandboxes = self._sandboxes()
        gone = watcher.sync_inits({n: s.init for n, s in sandboxes.items() if not s.stopped})
        for name in gone:
            self._exited(name)
        return sandboxes

    def _schedule_restarts(self, schedule: Schedule, now: float) -> None:
        """Every dead init whose policy restarts it, not yet scheduled, is, after its backoff; a
        stopped sandbox has no init to restart."""
        for name, sandbox in self._sandboxes().items():
            if not sandbox.restarts() or schedule.has(name):
                continue
            wait = self.backoff.next_delay(name, now)
            self.journal.info(f"sandbox/{name}: restarting in {wait:g} s")
            schedule.restart(name, now + wait)

    # -- passes

    def _pass(self, job: Pass, watcher: Watcher, schedule: Schedule) -> None:
        before = self._sandboxes()
        self.passes.run(job)
        after = self._watch_inits(watcher)
        self._count_restarts(before, after)
        for name in before.keys() - after.keys():
            self.backoff.forget(name)
            schedule.forget(name)
        self._schedule_restarts(schedule, time.monotonic())
        if not watcher.watching_records:
            with contextlib.suppress(OSError):  # none yet: nothing was applied
                watcher.watch_records(os.path.join(self.state_dir, KIND_DIRS["sandbox"]))
        if self._watch_directory(watcher):
            schedule.units_changed(time.monotonic(), ".")
        self.notifier.send(STATUS=self._status())

    def _count_restarts(self, before: dict[str, Sandbox], after: dict[str, Sandbox]) -> None:
        """A restart: an init that was dead before the pass and a new one that runs after it
        (not a stopped or tainted sandbox's new init: the pass may have waited for the lock of
        a `sandman start` or an apply that made it)."""
        now = time.monotonic()
        counts = {name: n for name, n in self.counts.items() if name in after}
        for name, sandbox in after.items():
            was = before.get(name)
            if sandbox.alive and (was is None or was.init != sandbox.init):
                self.backoff.up(name, now)
                if was is not None and not (was.alive or was.stopped or was.tainted):
                    counts[name] = counts.get(name, 0) + 1
        if counts != self.counts:
            self.counts = counts
            try:
                restarts.write_counts(self.state_dir, counts)
            except OSError as exc:
                self.journal.warning(f"restart counts not saved: {exc}")

    def _sandboxes(self) -> dict[str, Sandbox]:
        try:
            records = read_records(self.state_dir)
        except StateError as exc:
            self.journal.error(str(exc))
            return {}
        found = {}
        for record in records:
            if record.kind != "sandbox":
                continue
            init = Init(record.runtime.pid, record.runtime.start_time)
            alive = procs.is_running(init.pid, init.start_time)
            restart = record.sandbox.restart
            found[record.name] = Sandbox(init, alive, restart, record.stopped, record.tainted)
        return found

    def _watch_directory(self, watcher: Watcher) -> bool:
        """Watch the unit directory unless it is watched; True when it is watched anew after
        a failure (changes may have been missed meanwhile). A failure is logged once."""
        if watcher.watching_directory:
            return False
        try:
            watcher.watch_directory()
        except OSError as exc:
            if not self.unwatched:
                self.journal.error(
                    f"{self.options.directory}: cannot watch it ({exc.strerror}); changes are "
                    "picked up by the drift check and SIGHUP until it can be"
                )
            self.unwatched = True
            return False
        again, self.unwatched = self.unwatched, False
        if again:
            self.journal.notice(f"{self.options.directory}: watched again")
        return again

    def _status(self) -> str:
        sandboxes = self._sandboxes().values()
        running = sum(1 for s in sandboxes if s.alive)
        stopped = sum(1 for s in sandboxes if s.stopped)
        text = f"{running} sandboxes running, {len(sandboxes) - running - stopped} not running"
        if stopped:
            text += f", {stopped} stopped"
        if self.passes.bad_units is not None:
            text += "; the unit directory has problems, the last good units are kept"
        return text

    # -- the end

    def _stop(self) -> None:
        self.notifier.send(STOPPING=1, STATUS="stopping")
        if self.options.on_stop == "keep":
            self.journal.info("stopped; the sandboxes keep running (--on-stop keep)")
            return
        from sandman.reconcile import destroy

        destroyed = len(destroy(self.options.paths, JournalProgress(self.journal)).actions)
        restarts.write_counts(self.state_dir, {})
        lastgood.remove(self.state_dir)
        self.journal.info(f"stopped; {destroyed} objects destroyed (--on-stop stop)")
