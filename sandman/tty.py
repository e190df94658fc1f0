"""`exec -t`: the command gets a pseudo-terminal; sandman relays it to the user's terminal."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import select
import sys
import termios
import tty
from collections.abc import Iterator

from sandman.kernel.enter import EnterSpec, start_inside, wait_exit


def run_with_pty(spec: EnterSpec) -> int:
    master, slave = os.openpty()
    try:
        child = start_inside(
            dataclasses.replace(spec, stdio=(slave, slave, slave), new_session=True)
        )
    finally:
        os.close(slave)
    with _raw(sys.stdin.fileno()):
        _relay(master, sys.stdin.fileno(), sys.stdout.fileno())
    os.close(master)
    return wait_exit(child)


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


def _relay(master: int, stdin: int, stdout: int) -> None:
    sources = [master, stdin]
    while True:
        readable, _, _ = select.select(sources, [], [])
        if master in readable:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the other side closed, the command ended
                return
            if not data:
                return
            os.write(stdout, data)
        if stdin in readable:
            data = os.read(stdin, 65536)
            if data:
                os.write(master, data)
            else:
                sources.remove(stdin)
