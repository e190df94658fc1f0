"""The `exec` client's side of the command's stdio: what it hands in, what it relays, signals.

No fd of a host terminal is ever open inside a sandbox: with one, the command could push
keystrokes into the admin's shell (TIOCSTI), change its modes or read what is typed next.
- Without `-t`, fds 0, 1, 2 that are pipes or sockets are handed in as they are: they carry only
  the bytes meant for the command (reopening a pipe through /proc/self/fd gives the same pipe, a
  socket cannot be reopened). Anything else, a terminal, a file or a device, is relayed through a
  pipe, as `docker exec -i` does: a pty instead would change the bytes (CRLF, echo) and merge
  stdout and stderr for a command that asked for no terminal, and a file handed in could be
  reopened through /proc/self/fd with more rights than given (a read-only `< /etc/shadow`
  reopened for writing by a sandbox whose root is the host's).
- With `-t`, the command gets a pty of the sandbox's own devpts (see kernel/pty.py), in a session
  of its own; the client puts its terminal in raw mode, copies the window size and relays. At the
  end of piped input it sends the pty's EOF character, so `echo x | exec -t ... cat` ends.
SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1 and SIGUSR2 sent to the client are passed on to the
command; a SIGKILLed client takes the command down (PR_SET_PDEATHSIG, see kernel/enter.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import stat
import termios
import tty
from collections.abc import Callable, Iterator

from sandman.kernel import pty
from sandman.kernel import syscalls as sc
from sandman.kernel.enter import FORWARDED, EnterSpec, Stdio, exit_code, start_inside

_CHUNK = 65536


def run(spec: EnterSpec, with_tty: bool) -> int:
    """Run the command in the sandbox; return its exit code (128 + N when killed by signal N)."""
    _open_standard_fds()
    return _run_with_pty(spec) if with_tty else _run_with_pipes(spec)


def _open_standard_fds() -> None:
    """/dev/null on a closed fd 0, 1 or 2: otherwise a pipe or socket made here could take that
    number, and the entering child's dup2 onto 0, 1, 2 would close it."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDWR)
            if null != fd:
                os.dup2(null, fd)
                os.close(null)


# -- without -t


def _run_with_pipes(spec: EnterSpec) -> int:
    inside: list[int] = []  # the command's ends, closed here once it has them
    relayed: list[tuple[int, int]] = []  # (read from, write to)
    try:
        for fd in (0, 1, 2):
            inside.append(_hand_in(fd, relayed))
        first = start_inside(spec, Stdio(fds=(inside[0], inside[1], inside[2])))
    finally:
        for fd in inside:
            if fd > 2:
                os.close(fd)
    stdin = next(((src, dst) for src, dst in relayed if src == 0), None)
    outputs = {src: dst for src, dst in relayed if src != 0}
    try:
        return _relay_until_done(first, _Relay(stdin, outputs, end_of_input=None))
    finally:
        for fd in outputs:
            os.close(fd)


def _hand_in(fd: int, relayed: list[tuple[int, int]]) -> int:
    """The fd the command gets as `fd`: ours if it is a pipe or a socket, else a relay pipe."""
    mode = os.fstat(fd).st_mode
    if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode):
        return fd
    read_end, write_end = os.pipe2(os.O_CLOEXEC)
    if fd == 0:
        relayed.append((0, write_end))
        return read_end
    relayed.append((read_end, fd))
    return write_end


# -- with -t


def _run_with_pty(spec: EnterSpec) -> int:
    terminal = next((fd for fd in (0, 1) if os.isatty(fd)), None)
    winsize = fcntl.ioctl(terminal, termios.TIOCGWINSZ, b"\0" * 8) if terminal is not None else None
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    null = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
    with ours:
        try:
            first = start_inside(spec, Stdio((null, null, null), theirs.fileno(), winsize))
        finally:
            theirs.close()
            os.close(null)
        received = pty.receive_master(ours)
    if isinstance(received, str):
        os.write(2, f"{received}\n".encode())
        _, status = os.waitpid(first, 0)
        return exit_code(status) or 126
    master = received
    try:
        relay = _Relay((0, master), {master: 1}, end_of_input=_eof_characters(master))
        with _raw(0), _on_signal(signal.SIGWINCH, lambda: _copy_winsize(terminal, master)):
            return _relay_until_done(first, relay)
    finally:
        os.close(master)


def _eof_characters(master: int) -> Callable[[bytes], bytes]:
    """What ends piped input on the pty, as its mode is when the input ends: its VEOF character
    (^D), twice after a partial line (the first only sends the line); nothing in raw mode, where
    ^D is no EOF."""

    def characters(last: bytes) -> bytes:
        attributes = termios.tcgetattr(master)  # a master's termios calls act on its slave
        if not attributes[3] & termios.ICANON:
            return b""
        veof = attributes[6][termios.VEOF]
        character = veof if isinstance(veof, bytes) else bytes([veof])
        return character if last in (b"", b"\n") else character * 2

    return characters


def _copy_winsize(terminal: int | None, master: int) -> None:
    if terminal is not None:
        with contextlib.suppress(OSError):
            size = fcntl.ioctl(terminal, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(master, termios.TIOCSWINSZ, size)


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    tty.setraw(fd)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


# -- both


def _relay_until_done(first: int, relay: _Relay) -> int:
    """Relay while the entering child runs (its output until it ends), passing signals on to it;
    then reap it. The handlers go before the reap: the PID is ours until then."""
    done = sc.pidfd_open(first)
    try:
        with contextlib.ExitStack() as handlers:
            for signum in FORWARDED:
                handlers.enter_context(_on_signal(signum, _sender(first, signum)))
            relay.run(done)
    finally:
        os.close(done)
    _, status = os.waitpid(first, 0)
    return exit_code(status)


def _sender(pid: int, signum: int) -> Callable[[], None]:
    def send() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    return send


@contextlib.contextmanager
def _on_signal(signum: int, action: Callable[[], None]) -> Iterator[None]:
    previous = signal.signal(signum, lambda _signum, _frame: action())
    try:
        yield
    finally:
        signal.signal(signum, previous)


class _Relay:
    """Copies the client's stdin to the command's input, and the command's outputs to the
    client's, until every output ended and the entering child exited. Input is written only as
    the command takes it, so that a command that reads nothing cannot block its own output.
    It closes no fd it was given but a pipe's input end, at the end of input (the command then
    reads EOF); on a pty, `end_of_input` says what to write instead."""

    def __init__(
        self,
        stdin: tuple[int, int] | None,
        outputs: dict[int, int],
        end_of_input: Callable[[bytes], bytes] | None,
    ) -> None:
        self.stdin = stdin  # (the client's fd 0, the command's input); None once done
        self.outputs = dict(outputs)
        self.end_of_input = end_of_input
        self.pending = b""
        self.last = b""
        self.input_ended = False
        if stdin is not None:
            os.set_blocking(stdin[1], False)

    def run(self, done: int) -> None:
        exited = False
        while self.outputs or not exited:
            readable, writable, _ = select.select(*self._waits(done, exited), [])
            exited = exited or done in readable
            if self.stdin is not None and self.stdin[1] in writable:
                self._write_input()
            if self.stdin is not None and self.stdin[0] in readable:
                self._read_input()
            for source in [fd for fd in self.outputs if fd in readable]:
                self._copy_output(source)
            if exited and self.end_of_input is None:
                self._close_input()  # the command is gone: stop taking the user's input
        self._close_input()

    def _waits(self, done: int, exited: bool) -> tuple[list[int], list[int]]:
        readable = list(self.outputs) + ([] if exited else [done])
        writable = []
        if self.stdin is not None:
            if self.pending:
                writable.append(self.stdin[1])
            elif not self.input_ended:
                readable.append(self.stdin[0])
        return readable, writable

    def _read_input(self) -> None:
        assert self.stdin is not None
        data = os.read(self.stdin[0], _CHUNK)
        if data:
            self.pending, self.last = data, data[-1:]
            return
        self.input_ended = True
        if self.end_of_input is None:
            self._close_input()
        else:
            self.pending = self.end_of_input(self.last)

    def _write_input(self) -> None:
        assert self.stdin is not None
        try:
            written = os.write(self.stdin[1], self.pending)
        except BlockingIOError:
            return
        except OSError:  # EPIPE, EIO: the command no longer reads
            self._close_input()
            return
        self.pending = self.pending[written:]

    def _close_input(self) -> None:
        if self.stdin is not None and self.end_of_input is None:
            os.close(self.stdin[1])
        self.stdin, self.pending = None, b""

    def _copy_output(self, source: int) -> None:
        try:
            data = os.read(source, _CHUNK)
        except BlockingIOError:
            return
        except OSError:  # EIO: every fd of the pty's slave is closed
            data = b""
        if data:
            _write_all(self.outputs[source], data)
            return
        del self.outputs[source]
        if self.stdin is not None and self.stdin[1] == source:
            self._close_input()


def _write_all(fd: int, data: bytes) -> None:
    """All of `data`, waiting when the fd is non-blocking (a terminal shared with a program that
    set O_NONBLOCK on it); dropped once the reader is gone (EPIPE): the command goes on."""
    view = memoryview(data)
    with contextlib.suppress(OSError):
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                select.select([], [fd], [])
