"""The one orchestration of every verb that looks at or changes the host, and of the daemon:
load the units, observe the host, plan, and (under the state lock) carry the plan out.

`plan` previews, `apply` and each daemon pass reconcile, `destroy` and the daemon's
`--on-stop stop` carry out a destroy plan (plan/diff.destroy_plan) with the same applier, and
`stop`, `start` and `restart` a plan of plan/lifecycle.py, run from the records alone. Only
this module strings the layers together; each layer stays ignorant of the others above it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from sandman.apply.lock import state_lock
from sandman.errors import StateError, UnitError, UsageError
from sandman.images.config import configs_in
from sandman.observe.facts import ActualState
from sandman.observe.gather import gather
from sandman.observe.records import record_path
from sandman.paths import Paths
from sandman.plan.diff import Plan, destroy_plan, destroy_problems, plan, targeted
from sandman.plan.lifecycle import lifecycle_plan, unknown_names
from sandman.progress import Progress
from sandman.units import desired as units
from sandman.units.cache import UnitCache, directory_of
from sandman.units.canonicals import Canonicals
from sandman.units.desired import Desired


def preview(paths: Paths, directory: str, *, prune: bool = True, target: str | None = None) -> Plan:
    """What `reconcile` would do now; reads only, takes no lock."""
    actual = gather(paths.state_dir, orphans=prune)
    cache = _cache(paths, directory, actual)
    unchanged = _cached_no_op(cache, actual, prune, target)
    if unchanged is not None:
        return unchanged
    desired = desired_state(paths, directory, actual, cache)
    result = plan(desired, actual, prune=prune)
    result = targeted(result, desired, target) if target else result
    _preflight(paths, desired, result)
    return result


def desired_state(
    paths: Paths,
    directory: str,
    actual: ActualState | None = None,
    cache: UnitCache | None = None,
) -> Desired:
    """The units of DIRECTORY resolved: addresses kept as ACTUAL has them, and what a sandbox
    leaves out taken from the config of the container image it runs on. Kept in CACHE."""
    from sandman.units.read import read_units  # only when the cache cannot answer

    _keep_validators(paths)
    sticky = actual.addresses() if actual is not None else None
    images = cache.images if cache is not None else configs_in(paths.image_dir)
    snapshot = None if cache is None else cache.snapshot
    desired = read_units(directory, paths.tag, sticky=sticky, images=images, snapshot=snapshot)
    if cache is not None:
        cache.store(desired)
    return desired


def _keep_validators(paths: Paths) -> None:
    """The validators' schemas are kept beside the unit cache (units/compiled.py): every path
    that validates units, loaded or read back from records, says so before it validates."""
    from sandman.units import compiled

    compiled.keep_in(directory_of(paths.state_dir))


def _cache(paths: Paths, directory: str, actual: ActualState) -> UnitCache:
    return UnitCache(paths.state_dir, paths.image_dir, directory, paths.tag, actual.addresses())


def _cached_no_op(
    cache: UnitCache, actual: ActualState, prune: bool, target: str | None
) -> Plan | None:
    """The empty plan when the unit cache knows the directory and the host matches it; None
    when the units must be loaded (a miss, or something to do: apply needs the models)."""
    if target is not None:
        return None
    view: Canonicals | None = cache.lookup()
    if view is None:
        return None
    result = plan(view, actual, prune=prune)
    return None if result.actions else result


def _preflight(paths: Paths, desired: Desired, result: Plan) -> None:
    """What would fail half-way is a unit error before anything changes (observe/preflight)."""
    # A stopped sandbox's changed unit only changes its record: its next start is checked.
    checked = [a for a in result.actions if a.kind != "destroy" and a.reason != "stopped"]
    if checked:
        from sandman.observe import preflight

        changes = [
            preflight.Change(a.kind, a.object_kind, a.name, frozenset(c.key for c in a.changes))
            for a in checked
        ]
        problems = preflight.check(paths, desired, changes)
        if problems:
            raise UnitError(problems)


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
        cache = _cache(paths, directory, actual)
        unchanged = _cached_no_op(cache, actual, prune, target)
        if unchanged is not None:
            for warning in unchanged.warnings:
                progress.note(f"warning: {warning}")
            return unchanged
        desired = desired_state(paths, directory, actual, cache)
        for warning in desired.warnings:
            progress.note(f"warning: {warning}")
        result = plan(desired, actual, prune=prune)
        if target:
            result = targeted(result, desired, target)
        _preflight(paths, desired, result)
        if result.actions:
            _carry_out(paths, desired, actual, progress, result)
        return result


def _carry_out(
    paths: Paths, desired: Desired, actual: ActualState, progress: Progress, result: Plan | None
) -> None:
    """RESULT's actions (None: only sweep the instance's empty cgroups). The applier, and the
    kernel modules it drives, are imported here alone: a no-op apply, what a daemon runs most,
    never loads them (a third of its imports)."""
    from sandman.apply.applier import apply
    from sandman.apply.context import ApplyContext
    from sandman.apply.orphans import sweep_cgroups

    ctx = ApplyContext(paths, desired, actual, progress)
    if result is None:
        sweep_cgroups(ctx)
    else:
        apply(ctx, result)


def destroy(
    paths: Paths,
    progress: Progress,
    wanted: set[tuple[str, str]] | None = None,
    *,
    named: set[tuple[str, str]] | None = None,
    wait: bool = True,
    on_wait: Callable[[], None] | None = None,
) -> Plan:
    """Take down the applied objects of `wanted` (KIND, NAME), or all; return the plan carried
    out. With nothing left applied, the orphans go too, and the instance's empty cgroups.
    Refused (UsageError, nothing touched) for a `named` object that is not applied, or a network
    or slice that objects staying still use."""
    with state_lock(paths.state_dir, wait=wait, on_wait=on_wait):
        actual = gather(paths.state_dir, orphans=True)
        problems = destroy_problems(actual, wanted, named or set()) if wanted is not None else []
        if problems:
            raise UsageError("; ".join(problems))
        result = destroy_plan(actual, wanted)
        _carry_out(paths, Desired(paths.tag), actual, progress, result if result.actions else None)
        return result


def lifecycle(
    paths: Paths,
    progress: Progress,
    verb: str,
    names: list[str],
    *,
    wait: bool = True,
    on_wait: Callable[[], None] | None = None,
) -> Plan:
    """`sandman stop|start|restart NAME...` of recorded sandboxes; return the plan carried out.

    Under the lock, as an apply: a daemon pass waits for it, and finds the records as it left
    them. A start runs the recorded unit through apply's own create, so the desired state here
    is the records' own. Refused (UsageError, nothing touched) for a name nothing applied
    carries; a start that cannot succeed (its image gone) is a unit error before anything."""
    with state_lock(paths.state_dir, wait=wait, on_wait=on_wait):
        actual = gather(paths.state_dir)
        problems = unknown_names(actual, names)
        if problems:
            raise UsageError("; ".join(problems))
        result, notes = lifecycle_plan(actual, verb, names)
        for note in notes:
            progress.note(note)
        if result.actions:
            desired = recorded(paths, actual)
            _preflight(paths, desired, result)
            _carry_out(paths, desired, actual, progress, result)
        else:  # what a stop cut short after its last record leaves: the empty cgroups
            _carry_out(paths, Desired(paths.tag), actual, progress, None)
        return result


def recorded(paths: Paths, actual: ActualState) -> Desired:
    """What the records say was applied, as a desired state (units/desired.py reads each
    recorded unit back); each names the unit file it was applied from, for errors."""
    _keep_validators(paths)
    return Desired(
        paths.tag,
        sandboxes=_read_back(paths, actual, "sandbox", units.sandbox_from_canonical),
        networks=_read_back(paths, actual, "network", units.network_from_canonical),
        slices=_read_back(paths, actual, "slice", units.slice_from_canonical),
    )


_T = TypeVar("_T")


def _read_back(
    paths: Paths, actual: ActualState, kind: str, read: Callable[[str, str, Any], _T]
) -> dict[str, _T]:
    found = {}
    for name, record in actual.of_kind(kind).items():
        path = record_path(paths.state_dir, kind, name)
        try:
            found[name] = read(name, record.file or path, record.unit)
        except (ValueError, KeyError, TypeError) as exc:  # a refused unit is a ValueError
            raise StateError(
                path, f"its unit cannot be run again ({exc}); apply its unit directory"
            ) from exc
    return found
