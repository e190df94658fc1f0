"""JSON files a reader must see whole, old or new, never half written: records, restart counts,
pinned id ranges. Written to a temporary file beside the target (0600, never through a symlink),
fsynced, then renamed over it."""

from __future__ import annotations

import json
import os


def write_atomically(path: str, data: object, *, indent: int | None = None) -> None:
    temporary = f"{path}.tmp"
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC | os.O_NOFOLLOW
    fd = os.open(temporary, flags, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(json.dumps(data, indent=indent, sort_keys=True).encode())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
