"""sandman.kernel.systemd against a fake systemd on a private socket: the D-Bus conversation
(auth, no Hello, the call, the job's JobRemoved signal) without a systemd. The real one answers
in tests/vm/service_boot.py."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from jeepney import DBusAddress, HeaderFields, Message, new_error, new_method_return, new_signal
from jeepney.low_level import Parser

from sandman.kernel import systemd

EMITTER = DBusAddress("/org/freedesktop/systemd1", interface="org.freedesktop.systemd1.Manager")
JOB = "/org/freedesktop/systemd1/job/7"
Behaviour = Callable[[Message], list[Message]]


def job_removed(result: str, job: str = JOB) -> Message:
    return new_signal(EMITTER, "JobRemoved", "uoss", (7, job, "x.scope", result))


class FakeSystemd:
    """Accepts one connection, checks it says no Hello, answers each call with `behaviour`."""

    def __init__(self, path: Path, behaviour: Behaviour) -> None:
        self.listener = socket.socket(socket.AF_UNIX)
        self.listener.bind(str(path))
        self.listener.listen(1)
        self.behaviour = behaviour
        self.calls: list[Message] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            data = self._authenticate(connection)
            parser = Parser()
            serial = 100
            while data:
                parser.add_data(data)
                while (message := parser.get_next_message()) is not None:
                    self.calls.append(message)
                    for answer in self.behaviour(message):
                        serial += 1
                        connection.sendall(answer.serialise(serial=serial))
                data = connection.recv(4096)

    @staticmethod
    def _authenticate(connection: socket.socket) -> bytes:
        """The SASL exchange; returns what came after BEGIN (the first messages, at times)."""
        received = b""
        while b"\r\n" not in received:
            received += connection.recv(256)
        assert received.startswith(b"\0AUTH EXTERNAL ")
        connection.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
        while b"BEGIN\r\n" not in received:
            received += connection.recv(256)
        return received.split(b"BEGIN\r\n", 1)[1] or connection.recv(4096)


@pytest.fixture
def fake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., FakeSystemd]]:
    servers: list[FakeSystemd] = []
    monkeypatch.setattr(systemd, "JOB_TIMEOUT", 2.0)
    monkeypatch.setattr(systemd, "POLL", 0.3)

    def start(behaviour: Behaviour) -> FakeSystemd:
        path = tmp_path / "private"
        monkeypatch.setattr(systemd, "PRIVATE_SOCKET", str(path))
        servers.append(FakeSystemd(path, behaviour))
        return servers[-1]

    yield start
    for server in servers:
        server.listener.close()


def member(message: Message) -> Any:
    return message.header.fields.get(HeaderFields.member)


def answering(*after_start: Message, early: bool = False, job: str = "waiting") -> Behaviour:
    """Subscribe answered; StartTransientUnit answered with JOB, the signals after the reply
    (or before it, as systemd may send them when the job runs at once). Asked about JOB, the
    fake says its state is `job` ("" once it has ended: then the unit is active); ListJobs
    lists it."""

    def behaviour(message: Message) -> list[Message]:
        if member(message) == "StartTransientUnit":
            reply = new_method_return(message, "o", (JOB,))
            return [*after_start, reply] if early else [reply, *after_start]
        return [asked(message, job)]

    return behaviour


def asked(message: Message, job: str) -> Message:
    name, path = member(message), message.header.fields.get(HeaderFields.path)
    if name == "Get" and path == JOB:
        if not job:
            return new_error(message, "org.freedesktop.DBus.Error.UnknownObject", "s", ("gone",))
        return new_method_return(message, "v", (("s", job),))
    if name == "GetUnit":
        return new_method_return(message, "o", ("/org/freedesktop/systemd1/unit/x_2escope",))
    if name == "Get":
        return new_method_return(message, "v", (("s", "active"),))
    if name == "ListJobs":
        queued = [
            (7, "x.scope", "start", job, JOB, "/unit/x"),
            (3, "y.service", "start", "running", "/j/3", "/u/y"),
        ]
        return new_method_return(message, "a(usssoo)", (queued,))
    return new_method_return(message)


def test_a_scope_starts_once_its_job_is_done(fake: Callable[..., FakeSystemd]) -> None:
    unrelated = new_signal(EMITTER, "UnitNew", "so", ("x.scope", "/unit/x"))
    server = fake(answering(unrelated, job_removed("done", job="/other/job"), job_removed("done")))
    systemd.start_scope("x.scope", [42], [("Delegate", "b", True), ("Slice", "s", "m.slice")])
    subscribe, start = server.calls
    assert member(subscribe) == "Subscribe" and member(start) == "StartTransientUnit"
    unit, mode, properties, aux = start.body
    assert (unit, mode, aux) == ("x.scope", "fail", [])
    assert dict(properties) == {
        "PIDs": ("au", [42]),
        "Delegate": ("b", True),
        "Slice": ("s", "m.slice"),
    }


def test_a_job_done_before_the_reply_counts(fake: Callable[..., FakeSystemd]) -> None:
    fake(answering(job_removed("done"), early=True))
    systemd.start_scope("x.scope", [42], [])


def test_a_failed_job_says_how_it_ended(fake: Callable[..., FakeSystemd]) -> None:
    fake(answering(job_removed("failed")))
    with pytest.raises(systemd.SystemdError, match=r"x\.scope ended `failed`"):
        systemd.start_scope("x.scope", [42], [])


def test_a_refusal_names_systemd_s_error(fake: Callable[..., FakeSystemd]) -> None:
    def refuse(message: Message) -> list[Message]:
        if member(message) != "StartTransientUnit":
            return [new_method_return(message)]
        name = "org.freedesktop.systemd1.UnitExists"
        return [new_error(message, name, "s", ("Unit x.scope was already loaded",))]

    fake(refuse)
    with pytest.raises(systemd.SystemdError, match=r"UnitExists: Unit x\.scope was already"):
        systemd.start_scope("x.scope", [42], [])


def test_a_job_that_never_ends_is_a_timeout_that_names_systemd_s_queue(
    fake: Callable[..., FakeSystemd],
) -> None:
    server = fake(answering())
    with pytest.raises(systemd.SystemdError) as raised:
        systemd.start_scope("x.scope", [42], [])
    assert "did not finish its job to start x.scope" in str(raised.value)
    assert "its queue: x.scope start waiting, y.service start running" in str(raised.value)
    assert [member(m) for m in server.calls].count("Get") >= 2  # asked, then asked again


def test_a_job_that_ended_without_its_signal_is_found_done(
    fake: Callable[..., FakeSystemd],
) -> None:
    server = fake(answering(job=""))
    systemd.start_scope("x.scope", [42], [])
    assert "GetUnit" in [member(m) for m in server.calls]


def test_no_systemd_at_all_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(systemd, "PRIVATE_SOCKET", str(tmp_path / "absent"))
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'absent-bus'}")
    with pytest.raises(systemd.SystemdError, match="cannot reach systemd"):
        systemd.start_scope("x.scope", [42], [])


def test_a_private_socket_too_slow_to_let_us_in_is_waited_for_not_swapped_for_the_bus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PID 1 busy booting answered the authentication after jeepney's 2 s: the system bus,
    tried then, reached PID 1 through a dbus-daemon that did not answer for a minute."""
    silent = socket.socket(socket.AF_UNIX)
    silent.bind(str(tmp_path / "private"))
    silent.listen(1)  # connect succeeds; nothing ever answers
    bus = socket.socket(socket.AF_UNIX)
    bus.bind(str(tmp_path / "bus"))
    bus.listen(1)
    monkeypatch.setattr(systemd, "PRIVATE_SOCKET", str(tmp_path / "private"))
    monkeypatch.setattr(systemd, "CONNECT_TIMEOUT", 0.5)
    monkeypatch.setenv("DBUS_SYSTEM_BUS_ADDRESS", f"unix:path={tmp_path / 'bus'}")
    with silent, bus:
        with pytest.raises(systemd.SystemdError, match=r"did not let us in on .*private in 0\.5 s"):
            systemd.start_scope("x.scope", [42], [])
        bus.setblocking(False)
        with pytest.raises(BlockingIOError):
            bus.accept()  # nobody came to the system bus


def test_an_unanswered_call_is_named(fake: Callable[..., FakeSystemd]) -> None:
    def mute(message: Message) -> list[Message]:
        return [] if member(message) == "StartTransientUnit" else [new_method_return(message)]

    fake(mute)
    with pytest.raises(
        systemd.SystemdError, match=r"did not answer StartTransientUnit on .*private in 2 s"
    ):
        systemd.start_scope("x.scope", [42], [])


class LazySystemd(FakeSystemd):
    """As sd-bus serving a new private connection can be: a call that came in the same read as
    the authentication's BEGIN waits in its buffer until more bytes arrive."""

    def _serve(self) -> None:
        connection, _ = self.listener.accept()
        with connection:
            time.sleep(0.3)  # slow to read: BEGIN and the first call arrive together
            held = self._authenticate(connection)
            parser = Parser()
            serial = 100
            while data := connection.recv(4096):
                parser.add_data(held + data)
                held = b""
                while (message := parser.get_next_message()) is not None:
                    self.calls.append(message)
                    for answer in self.behaviour(message):
                        serial += 1
                        connection.sendall(answer.serialise(serial=serial))

    @staticmethod
    def _authenticate(connection: socket.socket) -> bytes:
        received = b""
        while b"\r\n" not in received:
            received += connection.recv(256)
        connection.sendall(b"OK 0123456789abcdef0123456789abcdef\r\n")
        time.sleep(0.3)
        while b"BEGIN\r\n" not in received:
            received += connection.recv(256)
        return received.split(b"BEGIN\r\n", 1)[1]


def test_a_first_call_left_unread_behind_begin_is_nudged_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(systemd, "JOB_TIMEOUT", 3.0)
    monkeypatch.setattr(systemd, "POLL", 0.3)
    monkeypatch.setattr(systemd, "NUDGE", 0.2)
    monkeypatch.setattr(systemd, "PRIVATE_SOCKET", str(tmp_path / "private"))
    server = LazySystemd(tmp_path / "private", answering(job_removed("done")))
    try:
        systemd.start_scope("x.scope", [42], [])
    finally:
        server.listener.close()
    names = [member(m) for m in server.calls]
    assert names[0] == "Subscribe" and "Ping" in names and "StartTransientUnit" in names
