"""A switch for the crash-safety tests, read from the environment and nowhere else.

`SANDMAN_FAULT_AFTER=N` SIGKILLs the applying process right after its N-th step, a step being
one change to the host that the next apply must be able to pick up from (a cgroup made, an init
started, a record written...). `SANDMAN_FAULT_TRACE=FILE` appends `N what` per step, so a test
knows how many kill points an apply has. Without either variable a step costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_steps = [0]  # a cell, not a global rebound: steps counted in this process


def step(what: str) -> None:
    after = os.environ.get("SANDMAN_FAULT_AFTER")
    trace = os.environ.get("SANDMAN_FAULT_TRACE")
    if after is None and trace is None:
        return
    _steps[0] += 1
    if trace:
        with open(trace, "a", encoding="utf-8") as handle:
            handle.write(f"{_steps[0]} {what}\n")
    if after is not None and _steps[0] >= int(after):
        os.kill(os.getpid(), signal.SIGKILL)
