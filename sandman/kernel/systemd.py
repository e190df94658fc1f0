"""Asking systemd (PID 1) for a transient scope over D-Bus, as systemd-run --scope, nspawn and
crun's systemd cgroup manager do.

On a host run by systemd the cgroup tree is systemd's: a program may only write below a cgroup
systemd delegated to it. A scope made with Delegate=yes is such a cgroup, and it belongs to no
service, so that restarting sandman's own service never touches what runs in it.

The connection is systemd's private socket, which root may use without a bus daemon (early at
boot, or on hosts without dbus): it is peer to peer, so no Hello, and systemd sends every job
signal to each private connection. The system bus is the fallback. jeepney marshals the messages:
pure Python, no libdbus, and StartTransientUnit's `ssa(sv)a(sa(sv))` is all its signature code.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from jeepney import (
    DBusAddress,
    HeaderFields,
    MatchRule,
    Message,
    MessageType,
    message_bus,
    new_method_call,
)
from jeepney.bus import get_bus
from jeepney.io.blocking import DBusConnection, DBusConnectionBase, prep_socket

PRIVATE_SOCKET = "/run/systemd/private"
MANAGER = DBusAddress(
    "/org/freedesktop/systemd1",
    bus_name="org.freedesktop.systemd1",
    interface="org.freedesktop.systemd1.Manager",
)
_PROPERTIES = "org.freedesktop.DBus.Properties"
_JOB_REMOVED = MatchRule(
    type="signal", interface="org.freedesktop.systemd1.Manager", member="JobRemoved"
)
# An emulated guest takes seconds to run a job; a real host milliseconds.
JOB_TIMEOUT = 60.0
POLL = 2.0  # seconds without the job's signal before systemd is asked about the job
# PID 1 busy booting an emulated guest took more than jeepney's 2 s to authenticate us.
CONNECT_TIMEOUT = 30.0
# Seconds without an answer before the connection is nudged with a Ping (see _Bus.call).
NUDGE = 1.0
_PEER = DBusAddress(
    "/org/freedesktop/systemd1",
    bus_name="org.freedesktop.systemd1",
    interface="org.freedesktop.DBus.Peer",
)
# The private socket is absent (no systemd, or not root) or refused: only then the system bus.
_NO_PRIVATE_SOCKET = (FileNotFoundError, ConnectionRefusedError, PermissionError)


class SystemdError(OSError):
    """systemd refused or failed a request; the message (its only argument) says which and
    why. An OSError, as every failure of the host's, so that apply reports it with its unit."""


class _NoObjectError(SystemdError):
    """The object asked about does not exist (a job that has ended)."""


_NO_OBJECT = frozenset(
    {
        "org.freedesktop.DBus.Error.UnknownObject",
        "org.freedesktop.systemd1.NoSuchJob",
        "org.freedesktop.systemd1.NoSuchUnit",
    }
)


def start_scope(unit: str, pids: Sequence[int], properties: Sequence[tuple[str, str, Any]]) -> None:
    """Make the transient scope `unit` holding `pids`, with `properties` as (name, D-Bus
    signature, value); return once systemd's job for it is done, or raise SystemdError."""
    body: tuple[object, ...] = (
        unit,
        "fail",
        _properties([("PIDs", "au", list(pids)), *properties]),
        [],
    )
    call = new_method_call(MANAGER, "StartTransientUnit", "ssa(sv)a(sa(sv))", body)
    with _connect() as bus:
        bus.call(new_method_call(MANAGER, "Subscribe"))
        job, early = bus.call(call)
        result = _job_result(bus, unit, str(job[0]), early)
    if result != "done":
        raise SystemdError(f"systemd's job to start {unit} ended `{result}`")


def _properties(items: Sequence[tuple[str, str, Any]]) -> list[tuple[str, tuple[str, Any]]]:
    return [(name, (signature, value)) for name, signature, value in items]


def _job_result(bus: _Bus, unit: str, job: str, early: list[Message]) -> str:
    """The result of `job` (`done`, `failed`, `timeout`...): from its JobRemoved signal, or from
    asking systemd each POLL seconds without it. The signal is not all there is to trust: a
    first pass at boot once waited out the whole timeout (in the guest, cause unknown); asking
    tells whether the job ended unseen or still waits, and, at the timeout, on what."""
    deadline = time.monotonic() + JOB_TIMEOUT
    result = _removed(early, job)
    while result is None:
        window = min(deadline, time.monotonic() + POLL)
        result = _removed(bus.signals_until(window), job)
        if result is None:
            result, met = _asked(bus, unit, job)
            result = result or _removed(met, job)
        if result is None and time.monotonic() >= deadline:
            raise SystemdError(_stuck(bus, unit, job))
    return result


def _removed(messages: Iterable[Message], job: str) -> str | None:
    for message in messages:
        if message.header.fields.get(HeaderFields.member) == "JobRemoved":
            _id, path, _unit, result = message.body
            if path == job:
                return str(result)
    return None


def _asked(bus: _Bus, unit: str, job: str) -> tuple[str | None, list[Message]]:
    """The job's result if it is gone (`done` when its unit is active, else the unit's state),
    None while it is queued; and the signals met while asking."""
    try:
        _state, met = bus.get(job, "org.freedesktop.systemd1.Job", "State")
        return None, met
    except _NoObjectError:
        pass
    try:
        state, met = bus.get(_unit_path(bus, unit), "org.freedesktop.systemd1.Unit", "ActiveState")
    except _NoObjectError:
        return "gone (systemd collected the scope)", []
    return ("done" if state == "active" else str(state)), met


def _unit_path(bus: _Bus, unit: str) -> str:
    path, _ = bus.call(new_method_call(MANAGER, "GetUnit", "s", (unit,)))
    return str(path[0])


def _stuck(bus: _Bus, unit: str, job: str) -> str:
    """What a job that never ended was waiting on: systemd's queue, as `systemctl list-jobs`."""
    jobs, _ = bus.call(new_method_call(MANAGER, "ListJobs"))
    queued = ", ".join(f"{name} {kind} {state}" for _id, name, kind, state, *_ in jobs[0])
    return (
        f"systemd did not finish its job to start {unit} ({job}) in {JOB_TIMEOUT:.0f} s; "
        f"its queue: {queued or 'empty'}"
    )


class _Bus:
    """A blocking connection that keeps the signals met while waiting for a reply."""

    def __init__(self, connection: DBusConnectionBase, where: str) -> None:
        self.connection = connection
        self.where = where  # the socket or bus, as errors name it

    def __enter__(self) -> _Bus:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.connection.close()

    def call(self, message: Message) -> tuple[Any, list[Message]]:
        """Send a method call; its reply's body, and the signals that came before it."""
        serial = self._send(message)
        signals = []
        deadline = time.monotonic() + JOB_TIMEOUT
        while True:
            reply = self._answer(deadline, message.header.fields.get(HeaderFields.member))
            if reply.header.fields.get(HeaderFields.reply_serial) == serial:
                break
            if reply.header.message_type is MessageType.signal:
                signals.append(reply)
        if reply.header.message_type is MessageType.error:
            name = reply.header.fields.get(HeaderFields.error_name, "error")
            text = reply.body[0] if reply.body else ""
            error = _NoObjectError if name in _NO_OBJECT else SystemdError
            raise error(f"systemd refused: {name}: {text}")
        return reply.body, signals

    def _send(self, message: Message) -> int:
        serial = int(next(self.connection.outgoing_serial))
        self.connection.sock.sendall(message.serialise(serial=serial))
        return serial

    def _answer(self, deadline: float, waiting_for: str) -> Message:
        """The next message, nudging a silent PID 1 with a Ping each NUDGE seconds.

        systemd's sd-bus, serving a new private connection, can leave a first call that came
        in the same read as the authentication's BEGIN unread in its buffer until more bytes
        arrive (seen in the guest at boot: Subscribe unanswered for 60 s, a new connection
        answered at once). A Ping is such bytes; its reply is skipped like any other."""
        while True:
            window = min(deadline, time.monotonic() + NUDGE)
            try:
                return self.connection._receive(window)
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise SystemdError(
                        f"systemd did not answer {waiting_for} on {self.where} in {JOB_TIMEOUT:g} s"
                    ) from None
            self._send(new_method_call(_PEER, "Ping"))

    def get(self, path: str, interface: str, name: str) -> tuple[Any, list[Message]]:
        """A property of an object of systemd's, and the signals met before the answer."""
        address = DBusAddress(path, bus_name=MANAGER.bus_name, interface=_PROPERTIES)
        body, met = self.call(new_method_call(address, "Get", "ss", (interface, name)))
        _signature, value = body[0]
        return value, met

    def signals_until(self, deadline: float) -> Iterator[Message]:
        """The signals that come before `deadline`, as they come."""
        while True:
            try:
                message = self._receive(deadline)
            except SystemdError:
                return
            if message.header.message_type is MessageType.signal:
                yield message

    def _receive(self, deadline: float, waiting_for: str = "a signal") -> Message:
        # _receive (a deadline, on the base class both connections share) is jeepney's own
        # reading loop; pyproject pins the minor versions it was read in.
        try:
            return self.connection._receive(deadline)
        except TimeoutError:
            raise SystemdError(
                f"systemd did not answer {waiting_for} on {self.where} in {JOB_TIMEOUT:g} s"
            ) from None


def _connect() -> _Bus:
    """systemd's private socket (peer to peer: no Hello, and every job signal comes), else the
    system bus, where signals come only to those who ask with AddMatch.

    A private socket that is there but slow is waited for, not swapped for the bus: the bus
    reaches PID 1 through dbus-daemon, which a PID 1 still booting may not serve in time."""
    try:
        return _Bus(
            DBusConnectionBase(prep_socket(PRIVATE_SOCKET, timeout=CONNECT_TIMEOUT)), PRIVATE_SOCKET
        )
    except _NO_PRIVATE_SOCKET as private:
        return _system_bus(private)
    except TimeoutError:
        raise SystemdError(
            f"systemd did not let us in on {PRIVATE_SOCKET} in {CONNECT_TIMEOUT:g} s"
        ) from None
    except OSError as private:
        raise SystemdError(f"cannot reach systemd on {PRIVATE_SOCKET}: {private}") from None


def _system_bus(private: OSError) -> _Bus:
    try:
        bus = _Bus(
            DBusConnection(prep_socket(get_bus("SYSTEM"), timeout=CONNECT_TIMEOUT)),
            "the system bus",
        )
        bus.call(message_bus.AddMatch(_JOB_REMOVED))
        return bus
    except OSError as system:
        raise SystemdError(
            f"cannot reach systemd: {PRIVATE_SOCKET}: {private}; system bus: {system}"
        ) from None
