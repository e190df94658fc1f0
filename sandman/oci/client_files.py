"""What a client hands sandman-oci by path: the console socket it listens on, the pid file it
reads once the verb returns (written whole: a client never reads half a PID), and the JSON
objects of `exec --process` and `update --resources` (`-`: the standard input)."""

from __future__ import annotations

import json
import os
import socket
import sys
from typing import Any

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


def read_json_object(source: str, option: str, what: str) -> dict[str, Any]:
    """The JSON object at path `source` (`-`: the standard input) given as `option`."""
    try:
        if source == "-":
            data = json.load(sys.stdin)
        else:
            with open(source, encoding="utf-8") as handle:
                data = json.load(handle)
    except (OSError, ValueError) as exc:
        raise OciError(f"{option} {source}: {exc}") from None
    if not isinstance(data, dict):
        raise OciError(f"{option} {source}: not a JSON object ({what})")
    return data
