"""--log and --log-format: where the runtime's own messages go.

containerd's shim reads the log as JSON lines and keeps the last `"level": "error"` message;
Podman (conmon), with the runtime in runtime_supports_json, reads the whole file as ONE JSON object
and shows its `msg`. Both are satisfied by one line per message, and at most one message per
call: an error is the only thing written."""

from __future__ import annotations

import datetime
import json
import os
import sys


def write_error(message: str, log: str | None, log_format: str) -> None:
    """The error on stderr, and in the log file when one is given."""
    print(f"sandman-oci: {message}", file=sys.stderr)
    if log is None:
        return
    if log_format == "json":
        now = datetime.datetime.now(datetime.UTC).isoformat()
        line = json.dumps({"level": "error", "msg": message, "time": now}) + "\n"
    else:
        line = f"error: {message}\n"
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        fd = os.open(log, flags, 0o600)
    except OSError:
        return  # the message is on stderr already
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
