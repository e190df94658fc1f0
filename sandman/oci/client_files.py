"""What a client hands sandman-oci by path: the console socket it listens on, and the pid file
it reads once the verb returns (written whole: a client never reads half a PID)."""

from __future__ import annotations

import os
import socket

from sandman.oci.errors import OciError


def connect_console(path: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        raise OciError(f"--console-socket {path}: cannot connect: {exc.strerror}") from None
    return sock


def write_pid_file(path: str, pid: int | str) -> None:
    temporary = f"{path}.sandman-oci.tmp"
    with open(temporary, "w", encoding="ascii") as handle:
        handle.write(str(pid))
    os.replace(temporary, path)
