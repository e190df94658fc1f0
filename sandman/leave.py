"""How sandman's commands end: what they wrote flushed, then the process leaves.

The interpreter's own teardown frees every module's objects one by one (3-4 ms of a `status`
or an `apply`, more than some of their work) and changes nothing a caller sees. sandman starts
no threads and registers no exit handlers that leaving skips; files it writes are closed where
they are written (records are replaced atomically), so only the two streams need a flush.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn


def leave(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more reaches the reader anyway
            code = code or 1
    os._exit(code)
