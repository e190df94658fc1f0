"""The console of a booted sandbox: /dev/console on a pty whose master a keeper process holds.

A booted init (systemd) writes its boot status to /dev/console and a getty may wait there; as
systemd-nspawn does, the pty comes from the sandbox's own devpts (the init makes it, spawn.py
`_take_console`, and sends the master over a socketpair), its slave is bound on /dev/console and
is the init's stdio. Something must read the master, or the init blocks once the pty's buffer is
full: the keeper, one small process per booted sandbox, started by apply before the init and
never apply's child (double fork), copies what the console prints into the sandbox's log and
serves `sandman console` on a unix socket in the sandbox's runtime dir (created 0600 by the
host's root, in the state dir that only root may enter; a client that is not uid 0 is refused
by its SO_PEERCRED as well).

The keeper holds a slave of its own, so that the master never reads as hung up while the init
reopens its console (systemd closes every fd early at start); it ends when the init has ended
(a pidfd, given the init's PID by apply once spawn returns), or at once if apply never does.
One client at a time: a second one is told so and closed.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import gc
import os
import select
import socket
import struct
import sys
from typing import Any

from sandman.kernel import syscalls as sc
from sandman.record import record

SOCKET_NAME = "console.sock"
DETACH_KEY = b"\x1d"  # Ctrl-], pressed three times within a second (as nspawn and machinectl)
BUSY = b"sandman console: another client is attached to this console\r\n"
# The master's wait for the init's PID and the master, from apply, before the keeper gives up.
_HANDOVER_TIMEOUT = 120.0
_CHUNK = 65536


@record
class Keeper:
    """A started keeper, as apply holds it: its PID, the end of the socketpair the init sends
    the master to (for the spawn spec) and the pipe that gets the init's PID."""

    pid: int
    init_end: int
    pid_pipe: int
    ready_pipe: int = -1  # EOF (or a byte) once the keeper listens: `console` then connects

    def release_init_end(self) -> None:
        """Once the first child has its copy: the keeper then reads EOF if the init never
        sends a master."""
        if self.init_end >= 0:
            os.close(self.init_end)
            self.init_end = -1

    def tell_init(self, init_pid: int) -> None:
        """The init's PID to the keeper; then wait until it listens (its interpreter started
        while the init was made), so that a `sandman console` right after apply connects."""
        with contextlib.suppress(OSError):
            os.write(self.pid_pipe, f"{init_pid}\n".encode())
        if self.ready_pipe >= 0:
            with contextlib.suppress(OSError):
                select.select([self.ready_pipe], [], [], _HANDOVER_TIMEOUT)
        self.close()

    def close(self) -> None:
        self.release_init_end()
        if self.pid_pipe >= 0:
            os.close(self.pid_pipe)
            self.pid_pipe = -1
        if self.ready_pipe >= 0:
            os.close(self.ready_pipe)
            self.ready_pipe = -1

    def stop(self) -> None:
        """Undo: the keeper ends (its pidfd, so a recycled PID is never signalled)."""
        self.close()
        with contextlib.suppress(OSError):
            pidfd = sc.pidfd_open(self.pid)
            try:
                sc.pidfd_send_signal(pidfd, 15)
            finally:
                os.close(pidfd)


def start_keeper(runtime_dir: str, log_fd: int) -> Keeper:
    """Bind the console socket in `runtime_dir`, then fork the keeper (double fork: it is
    reparented at once) with the socket, `log_fd` and its ends of the channels."""
    listener = _listen(runtime_dir)
    master_in, init_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    pid_read, pid_write = os.pipe2(os.O_CLOEXEC)
    found_read, found_write = os.pipe2(os.O_CLOEXEC)
    ready_read, ready_write = os.pipe2(os.O_CLOEXEC)
    try:
        middle = os.fork()
        if middle == 0:
            _middle(found_write, listener, master_in, (pid_read, log_fd, ready_write))
        os.waitpid(middle, 0)
        os.close(found_write)
        found_write = -1
        text = os.read(found_read, 32)
        if not text:
            raise OSError(errno.ECHILD, "the console keeper did not start")
        pid = int(text)
    except BaseException:
        init_end.close()
        os.close(pid_write)
        os.close(ready_read)
        raise
    finally:
        os.close(ready_write)
        listener.close()
        master_in.close()
        os.close(pid_read)
        os.close(found_read)
        if found_write >= 0:
            os.close(found_write)
    return Keeper(pid, init_end.detach(), pid_write, ready_read)


def _listen(runtime_dir: str) -> socket.socket:
    """The console socket, bound through an fd of the directory (a state dir's path can be
    longer than a unix socket's 108 bytes), 0600 from its creation (umask)."""
    directory = os.open(runtime_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(SOCKET_NAME, dir_fd=directory)
        old = os.umask(0o177)
        try:
            listener.bind(f"/proc/self/fd/{directory}/{SOCKET_NAME}")
        finally:
            os.umask(old)
    except BaseException:
        listener.close()
        raise
    finally:
        os.close(directory)
    return listener


def _middle(
    found: int, listener: socket.socket, master_in: socket.socket, rest: tuple[int, int, int]
) -> None:
    """The first fork: a session of its own, the keeper forked from it, its PID sent, gone."""
    status = 1
    try:
        # No collection from here on: a finalized socket of apply's would close an fd whose
        # number is now another's (as in spawn.py's children).
        gc.disable()
        sc.close_fds_except((listener.fileno(), master_in.fileno(), *rest, found))
        # Nor apply's stdio: whoever reads apply's output would wait for the keeper's end.
        null = os.open(os.devnull, os.O_RDWR)
        for target in (0, 1, 2):
            os.dup2(null, target)
        os.close(null)
        os.setsid()
        keeper = os.fork()
        if keeper == 0:
            os.close(found)
            _exec_keeper(listener.fileno(), master_in.fileno(), *rest)
        os.write(found, str(keeper).encode())
        status = 0
    finally:
        os._exit(status)


def _exec_keeper(*fds: int) -> None:
    """A fresh interpreter for the keeper, with only this module imported: a fork of apply would
    keep apply's whole heap (the unit models, pydantic: about 18 MB) for the sandbox's life."""
    try:
        for fd in fds:
            os.set_inheritable(fd, True)
        os.chdir("/")
        argv = [sys.executable, "-I", "-m", __name__, *map(str, fds)]
        os.execv(sys.executable, argv)
    finally:
        os._exit(127)


def _keep(argv: list[str]) -> int:
    """The keeper's process (`python -m sandman.kernel.console LISTENER CHANNEL PIDPIPE LOG
    READY`)."""
    listener_fd, channel_fd, pid_read, log_fd, ready = map(int, argv)
    for fd in (listener_fd, channel_fd, pid_read, log_fd, ready):
        os.set_inheritable(fd, False)
    listener = socket.socket(fileno=listener_fd)
    # Listening from here, not from apply: a client's SO_PEERCRED then names the keeper. A
    # client connecting before the master has come waits in the backlog.
    listener.listen(2)
    os.close(ready)
    channel = socket.socket(fileno=channel_fd)
    try:
        Serving(listener, channel, pid_read, log_fd).run()
    except (OSError, SystemExit):
        return 1
    return 0


def _receive_master(channel: socket.socket) -> int | None:
    channel.settimeout(_HANDOVER_TIMEOUT)
    try:
        _, fds, _, _ = socket.recv_fds(channel, 256, 1)
    except OSError:
        return None
    for extra in fds[1:]:
        os.close(extra)
    return fds[0] if fds else None


def _read_pid(pipe: int) -> int | None:
    ready, _, _ = select.select([pipe], [], [], _HANDOVER_TIMEOUT)
    text = os.read(pipe, 32) if ready else b""
    return int(text) if text.strip().isdigit() else None


class Serving:
    """The keeper's loop: the console's output to the log and the client, the client's input
    to the console, until the init has ended."""

    def __init__(
        self, listener: socket.socket, master_in: socket.socket, pid_read: int, log_fd: int
    ) -> None:
        self.listener, self.log_fd = listener, log_fd
        self.client: socket.socket | None = None
        master = _receive_master(master_in)
        master_in.close()
        init = _read_pid(pid_read)
        os.close(pid_read)
        if master is None or init is None:
            raise SystemExit(1)
        self.master = master
        # Our own slave: the master never reads as hung up between the init's reopenings.
        self.slave = fcntl.ioctl(master, sc.TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        self.init = sc.pidfd_open(init)
        self.poller = select.poll()
        for fd in (self.master, listener.fileno(), self.init):
            self.poller.register(fd, select.POLLIN)

    def run(self) -> None:
        while True:
            for fd, _ in self.poller.poll():
                if fd == self.init:
                    self._drain()
                    return
                if fd == self.master:
                    self._output(os.read(self.master, _CHUNK))
                elif fd == self.listener.fileno():
                    self._accept()
                elif self.client is not None and fd == self.client.fileno():
                    self._input()

    def _output(self, data: bytes) -> None:
        with contextlib.suppress(OSError):
            # A terminal ends lines with CR LF (ONLCR, which systemd sets on its console); the
            # log keeps the plain newlines every other sandbox's log has.
            os.write(self.log_fd, data.replace(b"\r\n", b"\n"))
        if self.client is not None:
            try:
                self.client.sendall(data)
            except OSError:
                self._drop_client()

    def _drain(self) -> None:
        os.set_blocking(self.master, False)
        with contextlib.suppress(OSError):
            while data := os.read(self.master, _CHUNK):
                self._output(data)

    def _accept(self) -> None:
        conn, _ = self.listener.accept()
        creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
        _, uid, _ = struct.unpack("3i", creds)
        if uid != 0 or self.client is not None:
            with contextlib.suppress(OSError):
                conn.sendall(BUSY if uid == 0 else b"sandman console: root only\r\n")
            conn.close()
            return
        conn.setblocking(True)
        self.client = conn
        self.poller.register(conn.fileno(), select.POLLIN)

    def _input(self) -> None:
        assert self.client is not None
        try:
            data = self.client.recv(_CHUNK)
        except OSError:
            data = b""
        if not data:
            self._drop_client()
            return
        with contextlib.suppress(OSError):
            os.write(self.master, data)

    def _drop_client(self) -> None:
        if self.client is None:
            return
        self.poller.unregister(self.client.fileno())
        self.client.close()
        self.client = None


# --- the client: `sandman console` -------------------------------------------------------------

DETACHED, CLOSED = "detached", "closed"
_QUIET_AFTER_EOF = 1.0  # stdin at its end (a pipe): detach once the console is quiet this long


def connect(runtime_dir: str) -> socket.socket:
    """The keeper's socket of the sandbox whose runtime dir this is; FileNotFoundError when no
    keeper serves it, ConnectionRefusedError when one served it and is gone."""
    directory = os.open(runtime_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            client.connect(f"/proc/self/fd/{directory}/{SOCKET_NAME}")
        except BaseException:
            client.close()
            raise
    finally:
        os.close(directory)
    return client


def attach(client: socket.socket, stdin: int, stdout: int) -> str:
    """Relay stdin to the console and the console to stdout until Ctrl-] is pressed three
    times within a second (DETACHED; the presses are not sent), stdin ends and the console is
    then quiet for a second (DETACHED), or the keeper closes (CLOSED: the sandbox ended, or
    another client is attached, which the keeper said). On a terminal, stdin is in raw mode
    meanwhile and restored on every way out."""
    saved = _raw(stdin)
    try:
        return _relay(client, stdin, stdout)
    finally:
        if saved is not None:
            import termios

            termios.tcsetattr(stdin, termios.TCSADRAIN, saved)


def _raw(fd: int) -> list[Any] | None:
    if not os.isatty(fd):
        return None
    import termios
    import tty

    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    return saved


def _relay(client: socket.socket, stdin: int, stdout: int) -> str:
    poller = select.poll()
    poller.register(client.fileno(), select.POLLIN)
    poller.register(stdin, select.POLLIN)
    presses: list[float] = []
    stdin_open = True
    while True:
        timeout = None if stdin_open else _QUIET_AFTER_EOF * 1000
        events = poller.poll(timeout)
        if not events:
            return DETACHED
        for fd, _ in events:
            if fd == client.fileno():
                data = client.recv(_CHUNK)
                if not data:
                    return CLOSED
                _write_all(stdout, data)
                continue
            data = os.read(stdin, _CHUNK)
            if not data:
                poller.unregister(stdin)
                stdin_open = False
                continue
            data, detach = _detach_presses(data, presses)
            if data:
                client.sendall(data)
            if detach:
                return DETACHED


def _detach_presses(data: bytes, presses: list[float]) -> tuple[bytes, bool]:
    """`data` without the detach key, and whether it was pressed the third time within a
    second; `presses` keeps the times of the recent presses across reads."""
    import time

    kept = bytearray()
    for byte in data:
        if byte != DETACH_KEY[0]:
            kept.append(byte)
            continue
        now = time.monotonic()
        presses[:] = [t for t in presses if now - t < 1.0] + [now]
        if len(presses) >= 3:
            return bytes(kept), True
    return bytes(kept), False


def _write_all(fd: int, data: bytes) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


if __name__ == "__main__":
    raise SystemExit(_keep(sys.argv[1:]))
