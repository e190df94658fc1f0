"""How each change and each drift is carried out: in place (by which step) or by a recreate.

One table per kind for unit keys, one for drift; patterns end in `.*` (or `*`) to cover a
whole table. The planner reads these tables to say what apply will do, and the applier runs the
steps the plan names and nothing else. The README's table of key semantics is checked against
this module by a test.
"""

from __future__ import annotations

import fnmatch

RECREATE = "recreate"
ENSURE = "ensure"  # a network's or a slice's idempotent create, run in place (DRIFT_REPAIRS)

# The cgroup limits, a sandbox's [resources] and a slice's [slice] alike: the "limits" step
# writes them all to the running cgroup. (kernel's CgroupLimits has the same names, but plan/ may
# not import kernel/; test_readme holds this table to the README's, which lists every model key.)
_LIMITS = ("memory_max", "memory_high", "cpu_max", "cpu_weight", "pids_max", "io_weight")

# Unit keys a running object takes in place -> the step that applies them. Any other key needs
# a recreate. "record": nothing on the host changes, the record takes the new value.
LIVE_KEYS: dict[str, dict[str, str]] = {
    "sandbox": {
        "sandbox.description": "record",
        "sandbox.restart": "record",
        "sandbox.stop_timeout": "record",
        "sandbox.stop_signal": "record",  # read from the record when the sandbox stops
        **{f"resources.{key}": "limits" for key in _LIMITS},
        "network.ports": "ports",
    },
    "network": {"network.nat": "nat"},
    "slice": {f"slice.{key}": "limits" for key in _LIMITS},
}

# Drift (observe's Drift.what) -> the step that repairs it in place, or RECREATE. A sandbox's
# init, cgroup or mounts cannot be put back under a running process; a network or a slice is
# made again in place by its (idempotent) create: "ensure". A stopped sandbox's only drift is a
# stop cut short, which the "stop" step finishes.
DRIFT_REPAIRS: dict[str, dict[str, str]] = {
    "sandbox": {
        "init": RECREATE,
        "cgroup": RECREATE,
        "stop": "stop",
        "mount *": RECREATE,
        "resources.*": "limits",
        "network.*": "network",
    },
    "network": {"*": ENSURE},
    "slice": {"*": ENSURE},
}


def live_step(kind: str, key: str) -> str | None:
    """The step that applies a change of `key` in place; None when it needs a recreate."""
    return _lookup(LIVE_KEYS[kind], key)


def is_live(kind: str, key: str) -> bool:
    return live_step(kind, key) is not None


def repair_step(kind: str, what: str) -> str:
    """The step that repairs the drift `what`: an in-place step, or RECREATE."""
    return _lookup(DRIFT_REPAIRS[kind], what) or RECREATE


def _lookup(table: dict[str, str], key: str) -> str | None:
    return next(
        (step for pattern, step in table.items() if fnmatch.fnmatchcase(key, pattern)), None
    )
