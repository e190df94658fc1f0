"""`--on-stop stop`: take down every object the instance applied, as prune would with no units.

The planner, given an empty desired state, destroys everything in dependency order (sandboxes,
then networks, then slices from the leaves up), so this is the same code path as a prune.
"""

from __future__ import annotations

from sandman.apply.applier import apply
from sandman.apply.context import ApplyContext
from sandman.apply.lock import state_lock
from sandman.apply.orphans import sweep_cgroups
from sandman.observe.gather import gather
from sandman.paths import Paths
from sandman.plan.diff import plan
from sandman.progress import Progress
from sandman.units.desired import Desired


def destroy_all(paths: Paths, progress: Progress) -> int:
    """Destroy every applied object; returns how many were destroyed."""
    with state_lock(paths.state_dir):
        actual = gather(paths.state_dir)
        nothing = Desired(paths.tag)
        result = plan(nothing, actual, prune=True)
        ctx = ApplyContext(paths, nothing, actual, progress)
        if result.actions:
            apply(ctx, result)
        else:
            sweep_cgroups(ctx)
        return len(result.actions)
