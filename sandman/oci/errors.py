"""The runtime's one error type: a message the client may match ("does not exist", "container
not running"), and the exit code. Only main.py turns it into an exit."""

from __future__ import annotations


class OciError(Exception):
    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self) -> str:
        return self.message


def not_found(container_id: str) -> OciError:
    return OciError(f"container {container_id!r} does not exist")


def not_running(container_id: str) -> OciError:
    return OciError(f"container {container_id!r}: container not running")
