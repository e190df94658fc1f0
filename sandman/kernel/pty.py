"""The pseudo-terminal of `exec -t`, taken from the sandbox's own devpts.

A pty of the host's devpts would put a host terminal inside the sandbox. The entering child opens
/dev/pts/ptmx once it is in the sandbox's mount namespace and confined (its ids, capabilities and
seccomp filter are the sandbox's), so it can open nothing the sandbox could not open itself; the
slave comes from the master with TIOCGPTPEER, without a path lookup the sandbox could redirect,
and the master goes to the `exec` client over a socketpair (SCM_RIGHTS). The alternative, the
client opening /proc/PID/root/dev/pts/ptmx, resolves a path the sandbox controls with the host's
root: it would need openat2(RESOLVE_IN_ROOT) and a check of what was opened, for nothing gained.
"""

from __future__ import annotations

import fcntl
import os
import socket
import stat
import struct
import termios

from sandman.kernel import syscalls as sc

_PTMX = "/dev/pts/ptmx"
_PTMX_DEVICE = os.makedev(5, 2)  # <linux/major.h> TTYAUX_MAJOR, minor 2: ptmx


def open_inside(winsize: bytes | None) -> tuple[int, int]:
    """Master and slave of a new pty of the devpts at /dev/pts, sized as the client's terminal.
    O_NONBLOCK: a FIFO put at that path would block the open; no symlink is followed."""
    flags = os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK
    master = sc.openat2(sc.AT_FDCWD, _PTMX, flags, resolve=sc.RESOLVE_NO_SYMLINKS)
    try:
        found = os.fstat(master)
        if not stat.S_ISCHR(found.st_mode) or found.st_rdev != _PTMX_DEVICE:
            raise OSError(0, f"{_PTMX} of the sandbox is not the ptmx device")
        os.set_blocking(master, True)
        fcntl.ioctl(master, sc.TIOCSPTLCK, struct.pack("i", 0))  # unlockpt(3)
        slave = fcntl.ioctl(master, sc.TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        if winsize is not None:
            fcntl.ioctl(master, termios.TIOCSWINSZ, winsize)
    except BaseException:
        os.close(master)
        raise
    return master, slave


def send_master(sock: int, master: int) -> None:
    with socket.socket(fileno=os.dup(sock)) as channel:
        socket.send_fds(channel, [b"m"], [master])


def send_console(sock: int, master: int) -> None:
    """The OCI console socket protocol (runc's utils.SendFile): ONE message, the pty's name as
    data and the master as its only SCM_RIGHTS fd."""
    number = struct.unpack("I", fcntl.ioctl(master, sc.TIOCGPTN, b"\0" * 4))[0]
    with socket.socket(fileno=os.dup(sock)) as channel:
        socket.send_fds(channel, [f"/dev/pts/{number}".encode()], [master])


def send_error(sock: int, message: str) -> None:
    with socket.socket(fileno=os.dup(sock)) as channel:
        channel.sendall(b"e" + message.encode(errors="replace"))


def receive_master(sock: socket.socket) -> int | str:
    """The master, or the error the entering child met before it could send one."""
    data, fds, _, _ = socket.recv_fds(sock, 4096, 1)
    for extra in fds[1:]:
        os.close(extra)
    if data[:1] == b"m" and fds:
        return fds[0]
    for fd in fds:
        os.close(fd)
    if data[:1] == b"e":
        return data[1:].decode(errors="replace")
    return "sandman exec: the entering process ended before it made the terminal"
