"""What the daemon waits for, in one selector: unit files changing (inotify), inits exiting
(pidfds), sandbox records changing outside its passes (inotify: `sandman start`, an apply by
hand) and signals (Python's wakeup fd, so a handler never interrupts a pass halfway).

No thread and no per-sandbox process: one poll over a handful of fds.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import socket
import struct
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sandman.daemon.lastgood import is_unit_file
from sandman.kernel import pidfd_exit
from sandman.kernel import syscalls as sc
from sandman.observe import procs

# Created, written and closed, renamed in or out, removed: what editors and `cp`/`mv` do.
UNIT_EVENTS = (
    sc.IN_CLOSE_WRITE
    | sc.IN_MOVED_TO
    | sc.IN_MOVED_FROM
    | sc.IN_CREATE
    | sc.IN_DELETE
    | sc.IN_ATTRIB
    | sc.IN_DELETE_SELF
    | sc.IN_MOVE_SELF
)
# The directory itself went away, or the kernel dropped events: read everything again.
_WHOLE_DIRECTORY = sc.IN_DELETE_SELF | sc.IN_MOVE_SELF | sc.IN_IGNORED | sc.IN_Q_OVERFLOW
# A record is written to a temporary file and renamed into place; removed by destroy.
RECORD_EVENTS = sc.IN_MOVED_TO | sc.IN_DELETE
_EVENT = struct.Struct("iIII")  # struct inotify_event without its name: wd, mask, cookie, len
SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# How long an ended init's pidfd is kept for its exit status: until the host's init reaps it
# (at once under systemd; some inits reap every few seconds), never longer than this.
EXIT_STATUS_WAIT = 30.0
_EXIT_POLL = 0.1  # seconds between tries while a status is awaited

Kind = Literal["units", "exit", "signal", "records"]


@dataclass(frozen=True)
class Event:
    """What woke the daemon: a unit file change, an init's exit, a signal or a record change."""

    kind: Kind
    # The unit file, the sandbox whose init exited, the signal's number, or the record's file.
    name: str
    lost_watch: bool = False


@dataclass(frozen=True)
class Init:
    """A sandbox's init as its record names it: PID and start time."""

    pid: int
    start_time: int


def parse_inotify(buffer: bytes) -> list[tuple[int, int, str]]:
    """(wd, mask, name) of each struct inotify_event in what one read() returned."""
    events, offset = [], 0
    while offset + _EVENT.size <= len(buffer):
        wd, mask, _cookie, length = _EVENT.unpack_from(buffer, offset)
        offset += _EVENT.size
        raw = buffer[offset : offset + length].split(b"\0", 1)[0]
        offset += length
        events.append((wd, mask, os.fsdecode(raw)))
    return events


def unit_event(mask: int, name: str) -> Event | None:
    """The event a directory change means to the daemon, None when it touches no unit file."""
    if mask & _WHOLE_DIRECTORY:
        return Event(
            "units", name or ".", lost_watch=bool(mask & (sc.IN_IGNORED | sc.IN_MOVE_SELF))
        )
    return Event("units", name) if is_unit_file(name) else None


class Watcher:
    def __init__(self, directory: str) -> None:
        self.directory = directory
        self.selector = selectors.DefaultSelector()
        self._inotify = sc.inotify_init1(sc.IN_NONBLOCK)
        self.selector.register(self._inotify, selectors.EVENT_READ, ("units", ""))
        self._wake_read, self._wake_write = socket.socketpair()
        for end in (self._wake_read, self._wake_write):
            end.setblocking(False)
        self._old_wakeup = signal.set_wakeup_fd(
            self._wake_write.fileno(), warn_on_full_buffer=False
        )
        self._old_handlers = {number: signal.signal(number, _note_only) for number in SIGNALS}
        self.selector.register(self._wake_read, selectors.EVENT_READ, ("signal", ""))
        self._wd: int | None = None
        self._records_wd: int | None = None
        self._inits: dict[str, tuple[Init, int]] = {}
        self._reported: set[tuple[str, Init]] = set()
        # Ended inits whose exit status is awaited: name -> (init, pidfd, give up at).
        self._ending: dict[str, tuple[Init, int, float]] = {}

    # -- the unit directory

    def watch_directory(self) -> None:
        """(Re)start watching the unit directory; raises OSError when it is not there."""
        if self._wd is not None:
            return
        self._wd = sc.inotify_add_watch(self._inotify, self.directory, UNIT_EVENTS | sc.IN_ONLYDIR)

    @property
    def watching_directory(self) -> bool:
        return self._wd is not None

    def watch_records(self, directory: str) -> None:
        """Watch the sandboxes' records (STATE_DIR/sandboxes) unless they are watched: an init
        another sandman started is then watched at once, not at the next pass. Raises OSError
        while the directory does not exist (nothing was applied yet)."""
        if self._records_wd is None:
            mask = RECORD_EVENTS | sc.IN_ONLYDIR
            self._records_wd = sc.inotify_add_watch(self._inotify, directory, mask)

    @property
    def watching_records(self) -> bool:
        return self._records_wd is not None

    def _unit_events(self) -> list[Event]:
        found = []
        while True:
            try:
                buffer = os.read(self._inotify, 65536)
            except BlockingIOError:
                break
            for wd, mask, name in parse_inotify(buffer):
                if wd == self._records_wd:
                    found += self._record_event(mask, name)
                    continue
                event = unit_event(mask, name)
                if event is None:
                    continue
                if event.lost_watch:
                    self._wd = None
                found.append(event)
        return found

    def _record_event(self, mask: int, name: str) -> list[Event]:
        if mask & sc.IN_IGNORED:  # the directory went (a destroy of everything)
            self._records_wd = None
        return [Event("records", name)] if name.endswith(".json") else []

    # -- inits

    def sync_inits(self, inits: dict[str, Init]) -> list[str]:
        """Watch exactly these inits; returns the sandboxes whose init is already gone (each
        init reported once, here or as an event)."""
        for name in list(self._inits):
            if inits.get(name) != self._inits[name][0]:
                self._unwatch(name)
        gone = []
        for name, init in inits.items():
            if name in self._inits or (name, init) in self._reported:
                continue
            if not self._watch(name, init):
                self._reported.add((name, init))
                gone.append(name)
        self._reported = {(n, i) for n, i in self._reported if inits.get(n) == i}
        return gone

    def _watch(self, name: str, init: Init) -> bool:
        try:
            fd = sc.pidfd_open(init.pid)
        except ProcessLookupError:
            return False
        except OSError:
            # No pidfds (Linux < 5.3, or seccomp): the drift check finds the exit instead.
            return True
        # Checked after opening: the fd then names the process that had this start time, never a
        # later one that reused the PID.
        if not procs.is_running(init.pid, init.start_time):
            os.close(fd)
            return False
        self.selector.register(fd, selectors.EVENT_READ, ("exit", name))
        self._inits[name] = (init, fd)
        return True

    def _unwatch(self, name: str) -> None:
        _init, fd = self._inits.pop(name)
        self.selector.unregister(fd)
        os.close(fd)

    # -- waiting

    def wait(self, timeout: float | None) -> list[Event]:
        events: list[Event] = []
        if self._ending:
            timeout = _EXIT_POLL if timeout is None else min(timeout, _EXIT_POLL)
        for key, _mask in self.selector.select(timeout):
            kind, _ = key.data
            if kind == "signal":
                events += self._signals()
            elif kind == "units":
                events += self._unit_events()
            else:
                name = key.data[1]
                self._reported.add((name, self._inits[name][0]))
                self._ended(name)
                events.append(Event("exit", name))
        return events

    # -- exit statuses

    def _ended(self, name: str) -> None:
        """Stop watching, but keep the pidfd: the kernel tells its exit status to its holder."""
        init, fd = self._inits.pop(name)
        self.selector.unregister(fd)
        self._forget_ending(name)
        self._ending[name] = (init, fd, time.monotonic() + EXIT_STATUS_WAIT)

    def collect_exits(self) -> list[tuple[str, Init, int | None]]:
        """The ended inits whose status is now known, or (None) will never be: on a kernel
        before 6.15, or when the host's init did not reap within EXIT_STATUS_WAIT."""
        done: list[tuple[str, Init, int | None]] = []
        for name, (init, fd, give_up) in list(self._ending.items()):
            try:
                status = pidfd_exit.exit_status(fd)
            except OSError:
                status = None
            else:
                if status is None and time.monotonic() < give_up:
                    continue
            done.append((name, init, status))
            self._forget_ending(name)
        return done

    def _forget_ending(self, name: str) -> None:
        ending = self._ending.pop(name, None)
        if ending is not None:
            os.close(ending[1])

    def _signals(self) -> list[Event]:
        found = []
        with contextlib.suppress(BlockingIOError):
            while data := self._wake_read.recv(64):
                found += [Event("signal", str(number)) for number in data]
        return found

    def close(self) -> None:
        for name in list(self._inits):
            self._unwatch(name)
        for name in list(self._ending):
            self._forget_ending(name)
        signal.set_wakeup_fd(self._old_wakeup)
        for number, handler in self._old_handlers.items():
            signal.signal(number, handler)
        self.selector.close()
        os.close(self._inotify)
        for end in (self._wake_read, self._wake_write):
            end.close()


def _note_only(_number: int, _frame: object) -> None:
    """The wakeup fd carries the signal; the handler only keeps Python from acting on it."""


def names(events: Iterable[Event], kind: Kind) -> list[str]:
    return [e.name for e in events if e.kind == kind]
