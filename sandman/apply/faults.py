"""A switch for the crash-safety tests, read from the environment and nowhere else.

`SANDMAN_FAULT_AFTER=N` SIGKILLs the applying process right after its N-th step, a step being
one change to the host that the next apply must be able to pick up from (a cgroup made, an init
started, a record written...). `SANDMAN_FAULT_TRACE=FILE` appends `N what` per step, so a test
knows how many kill points an apply has. `SANDMAN_FAULT_FAIL=STEP` makes the step named STEP
(as the trace writes it) raise an OSError instead, where a step can fail (a failed prepare).
`SANDMAN_FAULT_PAUSE=OBJECT@STEP=SECONDS[,...]` makes the children of OBJECT's create sleep at a
spawn step (kernel/spawn.py STEPS), so that a test can force the order in which creates run.
Without these variables a step costs three dict lookups.
"""

from __future__ import annotations

import errno
import os
import signal

_steps = [0]  # a cell, not a global rebound: steps counted in this process


def step(what: str) -> None:
    after = os.environ.get("SANDMAN_FAULT_AFTER")
    trace = os.environ.get("SANDMAN_FAULT_TRACE")
    if os.environ.get("SANDMAN_FAULT_FAIL") == what:
        raise OSError(errno.EIO, f"fault injected at {what!r} (SANDMAN_FAULT_FAIL)")
    if after is None and trace is None:
        return
    _steps[0] += 1
    if trace:
        with open(trace, "a", encoding="utf-8") as handle:
            handle.write(f"{_steps[0]} {what}\n")
    if after is not None and _steps[0] >= int(after):
        os.kill(os.getpid(), signal.SIGKILL)


def pauses(obj: str) -> dict[str, float]:
    """The spawn steps at which OBJECT's children sleep, from SANDMAN_FAULT_PAUSE."""
    found: dict[str, float] = {}
    for entry in os.environ.get("SANDMAN_FAULT_PAUSE", "").split(","):
        target, _, rest = entry.partition("@")
        step, _, seconds = rest.partition("=")
        if target == obj and step and seconds:
            found[step] = float(seconds)
    return found
