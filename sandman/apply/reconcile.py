"""One reconcile pass, shared by `sandman apply` and the daemon: under the state lock, observe the
host, read the units, plan, and carry the plan out."""

from __future__ import annotations

from collections.abc import Callable

from sandman.apply.applier import apply
from sandman.apply.context import ApplyContext
from sandman.apply.lock import state_lock
from sandman.observe.gather import gather
from sandman.paths import Paths
from sandman.plan.diff import Plan, plan, targeted
from sandman.progress import Progress
from sandman.units.read import read_units


def reconcile(
    paths: Paths,
    directory: str,
    progress: Progress,
    *,
    prune: bool = True,
    target: str | None = None,
    wait: bool = True,
    on_wait: Callable[[], None] | None = None,
) -> Plan:
    """Make the host what `directory` declares; return the plan that was carried out.

    Bad units raise before anything on the host changes. A failed action raises ApplyError
    after the actions that do not depend on it have run."""
    with state_lock(paths.state_dir, wait=wait, on_wait=on_wait):
        actual = gather(paths.state_dir, orphans=prune)
        desired = read_units(directory, paths.tag, sticky=actual.addresses())
        result = plan(desired, actual, prune=prune)
        if target:
            result = targeted(result, desired, target)
        if result.actions:
            apply(ApplyContext(paths, desired, actual, progress), result)
        return result
