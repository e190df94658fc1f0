"""Which unit keys a running object can take live, and which need it made anew.

One table per kind; a key not listed as live needs a recreate. Patterns end in `.*` to cover a
whole table. The README's table of key semantics is checked against this module by a test.
"""

from __future__ import annotations

import fnmatch

LIVE_KEYS: dict[str, tuple[str, ...]] = {
    "sandbox": (
        "sandbox.description",
        "sandbox.restart",
        "sandbox.stop_timeout",
        "resources.memory_max",
        "resources.memory_high",
        "resources.cpu_max",
        "resources.cpu_weight",
        "resources.pids_max",
        "resources.io_weight",
        "network.ports",
    ),
    "network": ("network.nat",),
    "slice": (
        "slice.memory_max",
        "slice.memory_high",
        "slice.cpu_max",
        "slice.cpu_weight",
        "slice.pids_max",
        "slice.io_weight",
    ),
}


def is_live(kind: str, key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, pattern) for pattern in LIVE_KEYS[kind])
