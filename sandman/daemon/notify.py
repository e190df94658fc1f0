"""The sd_notify protocol, client side: datagrams of `KEY=VALUE` lines to $NOTIFY_SOCKET.

Written here rather than taken from libsystemd: it is a few lines, and sandman must run the same
without systemd (the socket is then simply absent and every message is dropped).
"""

from __future__ import annotations

import contextlib
import os
import socket


def socket_address(value: str) -> str | bytes:
    """The address of $NOTIFY_SOCKET: a path, or with a leading `@` an abstract socket name."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def message(**fields: object) -> bytes:
    """`READY=1\\nSTATUS=...`: one line per field, newlines inside a value flattened."""
    lines = [f"{key}={str(value).replace(chr(10), ' ')}" for key, value in fields.items()]
    return "\n".join(lines).encode()


class Notifier:
    """Sends to systemd when it started us with Type=notify; does nothing otherwise."""

    def __init__(self, address: str | bytes | None) -> None:
        self.address = address
        self._socket: socket.socket | None = None

    @classmethod
    def from_environment(cls) -> Notifier:
        value = os.environ.get("NOTIFY_SOCKET")
        return cls(socket_address(value) if value else None)

    def send(self, **fields: object) -> None:
        """Best effort: systemd gone or the socket full must not stop the daemon."""
        if self.address is None:
            return
        if self._socket is None:
            self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        with contextlib.suppress(OSError):
            self._socket.sendto(message(**fields), self.address)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
