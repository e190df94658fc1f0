"""Run one sandman command in-process with wall-clock timers around named functions.

`python bench/time_calls.py OUT.json MODULE:NAME[,MODULE:NAME...] VERB ARGS...`, e.g.
`python bench/time_calls.py /tmp/t.json sandman.kernel.net:create_veth apply units/ --state-dir S`

cProfile (profile_cli.py) slows Python code several times more than system calls, so the shares
it shows between pyroute2's Python and the waits on the kernel or the children are skewed; here
each named function is replaced, on its module, by a wrapper that adds `time.perf_counter()`
around the call, and nothing else is slowed. Only calls that look the name up on the module at
call time are seen (`module.name(...)`, or a bare `name(...)` inside that module); a
`@contextmanager` function would be timed to the making of its context manager only. NAME may be
`Class.method`. Writes {"MODULE:NAME": [calls, seconds]} to OUT.json; the exit code is sandman's.
"""

from __future__ import annotations

import functools
import importlib
import json
import sys
import time
from collections.abc import Callable
from typing import Any


def wrap(target: str, totals: dict[str, list[float]]) -> None:
    module_name, _, path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *parents, name = path.split(".")
    for parent in parents:
        owner = getattr(owner, parent)
    original: Callable[..., Any] = getattr(owner, name)
    totals[target] = [0, 0.0]

    @functools.wraps(original)
    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            entry = totals[target]
            entry[0] += 1
            entry[1] += time.perf_counter() - start

    setattr(owner, name, timed)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: time_calls.py OUT.json MODULE:NAME[,...] VERB [ARGS...]", file=sys.stderr)
        return 2
    out, targets, args = argv[0], argv[1].split(","), argv[2:]
    from sandman import cli

    totals: dict[str, list[float]] = {}
    for target in targets:
        wrap(target, totals)
    try:
        code = cli.main(args)
    finally:
        with open(out, "w", encoding="utf-8") as handle:
            json.dump(totals, handle)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
