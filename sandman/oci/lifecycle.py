"""A stored container's live status, read from the kernel: the init's PID (checked against its
start time, so a reused PID is not taken for it), the exec gate FIFO and the cgroup freezer."""

from __future__ import annotations

import contextlib
import os

from sandman.oci import cgroups
from sandman.oci.state import Stored

OCI_VERSION = "1.0.2"


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat; None for a missing process or a zombie."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            text = handle.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2 :].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


def alive(stored: Stored) -> bool:
    return stored.pid > 0 and start_time(stored.pid) == stored.pid_start


def status(stored: Stored, directory: str) -> str:
    if not alive(stored):
        return "stopped"
    if os.path.exists(os.path.join(directory, "exec.fifo")):
        return "created"
    if stored.cgroup is not None:
        with contextlib.suppress(OSError, ValueError):
            if cgroups.driver(stored.cgroup).is_frozen(stored.cgroup):
                return "paused"
    return "running"


def state_json(stored: Stored, directory: str) -> dict[str, object]:
    current = status(stored, directory)
    return {
        "ociVersion": OCI_VERSION,
        "id": stored.id,
        "status": current,
        "pid": stored.pid if current != "stopped" else 0,
        "bundle": stored.bundle,
        "rootfs": os.path.join(stored.bundle, "rootfs"),
        "created": stored.created,
        "annotations": dict(stored.annotations),
        "owner": "",
    }
