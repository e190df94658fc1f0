"""How each sandbox's init last ended, as the daemon learned it (kernel/pidfd_exit.py), kept in
STATE_DIR/daemon/exits.json for `status` and `show` (read with json alone: status stays fast).

Only the daemon can learn it: it holds a pidfd of every init when it ends. An init that ended
while no daemon ran, or on a kernel before 6.15, has no entry; its end is then unknown, as it
is to every tool that is not the init's parent. Each entry names the init by PID and start
time, so an entry is never taken for a later init's.
"""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
import json
import os
from typing import NamedTuple

from sandman.atomic_json import write_atomically


class Exit(NamedTuple):
    """One init's end: which init, its wait status, when the daemon learned it."""

    pid: int
    start_time: int
    status: int
    at: float  # seconds since the epoch


def exits_path(state_dir: str) -> str:
    return os.path.join(state_dir, "daemon", "exits.json")


def read_exits(state_dir: str) -> dict[str, Exit]:
    """The last end of each sandbox's init; none recorded (or a damaged file) reads as none."""
    try:
        with open(exits_path(state_dir), encoding="utf-8") as handle:
            data = json.load(handle)
        return {
            str(name): Exit(int(e["pid"]), int(e["start_time"]), int(e["status"]), float(e["at"]))
            for name, e in dict(data["exits"]).items()
        }
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def write_exits(state_dir: str, exits: dict[str, Exit]) -> None:
    """Atomically, as records are: a reader sees the old entries or the new ones."""
    path = exits_path(state_dir)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    entries = {name: e._asdict() for name, e in sorted(exits.items())}
    write_atomically(path, {"version": 1, "exits": entries})
