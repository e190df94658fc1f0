"""Run a plan: the only layer that changes the host.

Under the state dir's lock, actions run in the plan's order; each object's record is written
(atomically) as soon as that object is done, so an interrupted apply leaves records that match
the host and the next plan picks up from there. A failed action has undone its own partial work;
the actions that do not depend on it still run, and the failures are reported together.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator

from sandman.apply import faults, name_files, networks, orphans, sandboxes, slices, stops
from sandman.apply.context import ApplyContext
from sandman.apply.limits import cgroup_limits
from sandman.errors import ApplyError
from sandman.observe import procs
from sandman.observe.facts import Record
from sandman.plan.actions import Action
from sandman.plan.diff import Plan
from sandman.plan.keys import ENSURE
from sandman.units.desired import DesiredSandbox, sandbox_from_canonical


def apply(ctx: ApplyContext, plan: Plan) -> None:
    """Carry the plan out. A failed action does not stop the others: what does not depend on it
    goes on; what does (a sandbox on a failed network or slice) is skipped. The failures are
    raised together at the end."""
    failures: list[ApplyError] = []
    ctx.progress.begin(len(plan.actions))
    ctx.table_goes = _every_network_goes(ctx, plan)
    try:
        for batch in _batches(plan.actions):
            if len(batch) > 1:
                failures += _create_together(ctx, batch, failures)
                continue
            (action,) = batch
            if _skipped(ctx, action, failures):
                continue
            failure = _run(ctx, action)
            if failure is not None:
                failures.append(failure)
        networks.settle_veths(ctx)
        name_files.refresh_hosts(ctx)
    finally:
        orphans.sweep_cgroups(ctx)
    if len(failures) == 1:
        raise failures[0]
    if failures:
        raise ApplyError(
            "apply", f"{len(failures)} actions failed:\n" + "\n".join(str(f) for f in failures)
        )


def _every_network_goes(ctx: ApplyContext, plan: Plan) -> bool:
    recorded = {name for kind, name in ctx.records if kind == "network"}
    doomed = {a.name for a in plan.actions if (a.object_kind, a.kind) == ("network", "destroy")}
    return bool(recorded) and recorded <= doomed and not ctx.desired.networks


def _run(ctx: ApplyContext, action: Action) -> ApplyError | None:
    what = action.describe()
    ctx.progress.start(what)
    started = time.monotonic()
    try:
        execute(ctx, action)
    except (ApplyError, OSError) as exc:
        return _failed(ctx, action, exc)
    _done(ctx, action, started)
    return None


def _failed(ctx: ApplyContext, action: Action, exc: ApplyError | OSError) -> ApplyError:
    ctx.progress.failed(action.describe(), exc)
    return exc if isinstance(exc, ApplyError) else ApplyError(action.object, action.kind, exc)


def _done(ctx: ApplyContext, action: Action, started: float) -> None:
    ctx.progress.done(action.describe(), time.monotonic() - started)
    faults.step(f"{action.object}: {action.kind} done")


def _skipped(ctx: ApplyContext, action: Action, failures: list[ApplyError]) -> bool:
    blocker = _failed_dependency(ctx, action, failures)
    if blocker == action.object:
        ctx.progress.note(f"{action.object}: not started again, its stop failed")
    elif blocker:
        ctx.progress.note(f"{action.object}: skipped, it depends on {blocker}, which failed")
    return bool(blocker)


# Sandboxes created side by side: enough to overlap the kernel's waits (on cgroup v1, a grace
# period per cgroup join, shared by concurrent joins), few enough to bound open pipes and forks.
CREATE_WINDOW = 8


def _batches(actions: tuple[Action, ...]) -> Iterator[list[Action]]:
    """Runs of consecutive sandbox creates (up to CREATE_WINDOW), every other action alone."""
    batch: list[Action] = []
    for action in actions:
        if action.object_kind == "sandbox" and action.kind == "create":
            batch.append(action)
            if len(batch) == CREATE_WINDOW:
                yield batch
                batch = []
            continue
        if batch:
            yield batch
            batch = []
        yield [action]
    if batch:
        yield batch


def _create_together(
    ctx: ApplyContext, batch: list[Action], failures: list[ApplyError]
) -> list[ApplyError]:
    """Start every sandbox of the batch (up to its first child's fork), then finish each in
    order. Each create still undoes its own partial work when it fails."""
    failed: list[ApplyError] = []
    begun: list[tuple[Action, float, Generator[None, None, Record]]] = []
    try:
        for action in batch:
            if _skipped(ctx, action, failures):
                continue
            ctx.progress.start(action.describe())
            started = time.monotonic()
            stages = sandboxes.create_stages(ctx, ctx.desired.sandboxes[action.name])
            try:
                next(stages)
            except (ApplyError, OSError) as exc:
                failed.append(_failed(ctx, action, exc))
                continue
            begun.append((action, started, stages))
        while begun:
            action, started, stages = begun.pop(0)
            try:
                sandboxes.finish_stages(stages)
            except (ApplyError, OSError) as exc:
                failed.append(_failed(ctx, action, exc))
                continue
            _done(ctx, action, started)
    finally:
        for _, _, stages in begun:  # interrupted: undo what was started and not finished
            stages.close()
    return failed


def _failed_dependency(ctx: ApplyContext, action: Action, failures: list[ApplyError]) -> str | None:
    if action.object_kind != "sandbox" or action.kind == "destroy" or not failures:
        return None
    failed = {f.obj for f in failures}
    if action.kind == "start" and action.object in failed:  # a restart whose stop failed
        return action.object
    sandbox = ctx.desired.sandboxes.get(action.name)
    if sandbox is None:
        return None
    needs = [f"slice/{name}" for name in sandbox.slice_path[1:]]
    if sandbox.unit.network is not None:
        needs.append(f"network/{sandbox.unit.network.attach}")
    return next((need for need in needs if need in failed), None)


def execute(ctx: ApplyContext, action: Action) -> None:
    if action.reason == "orphan":
        orphans.remove(ctx, action)
        return
    handler = _HANDLERS[(action.object_kind, action.kind)]
    handler(ctx, action)


def _record(ctx: ApplyContext, action: Action) -> Record:
    return ctx.records[(action.object_kind, action.name)]


def _sandbox_create(ctx: ApplyContext, action: Action) -> None:
    sandboxes.create(ctx, ctx.desired.sandboxes[action.name])


def _sandbox_recreate(ctx: ApplyContext, action: Action) -> None:
    # Tainted first: killed between the destroy and the new record, the next plan still
    # recreates it, whatever its restart policy says about an init that is gone.
    old = sandboxes.taint(ctx, _record(ctx, action))
    was_running = procs.is_running(old.runtime.pid, old.runtime.start_time)
    sandboxes.destroy(ctx, old, keep_record=True)
    try:
        sandboxes.create(ctx, ctx.desired.sandboxes[action.name])
    except (ApplyError, OSError):
        if was_running:
            _bring_back(ctx, old)
        raise


def _bring_back(ctx: ApplyContext, old: Record) -> None:
    """A recreate whose new sandbox failed to start: the old one runs again from its record, so
    that a change that cannot work never costs the running sandbox (the apply still fails, and
    the next plan proposes the change again)."""
    file = ctx.desired.sandboxes[old.name].file
    try:
        sandboxes.create(ctx, sandbox_from_canonical(old.name, file, old.unit))
    except (ApplyError, OSError, ValueError, KeyError) as exc:  # KeyError: its network went
        ctx.progress.note(
            f"sandbox/{old.name}: its previous unit did not start again either: {exc}"
        )
        return
    ctx.progress.note(f"sandbox/{old.name}: the change failed; the sandbox runs its previous unit")


def _sandbox_update(ctx: ApplyContext, action: Action) -> None:
    sandbox = ctx.desired.sandboxes[action.name]
    _run_steps(ctx, action, sandbox, _record(ctx, action))
    # Read again: a step may have recorded something (finishing a stop does).
    sandboxes.rewrite_record(ctx, sandbox, _record(ctx, action))


def _sandbox_repair(ctx: ApplyContext, action: Action) -> None:
    """Drift the plan repairs in place (limits edited by hand, a veth deleted): the init keeps
    running. Drift that needs a new init is planned as a recreate, not here."""
    _run_steps(ctx, action, ctx.desired.sandboxes[action.name], _record(ctx, action))


def _run_steps(ctx: ApplyContext, action: Action, sandbox: DesiredSandbox, record: Record) -> None:
    for step in action.steps:
        with sandboxes.unit_key(sandbox, _STEP_KEYS.get(step, step), f"{step} in place"):
            _SANDBOX_STEPS[step](ctx, sandbox, record)


# The unit key each in-place step serves, for errors (a limit names its own key).
_STEP_KEYS = {
    "limits": "resources",
    "ports": "network.ports",
    "network": "network",
    "stop": "sandbox.stop_timeout",
}


def _write_limits(ctx: ApplyContext, sandbox: DesiredSandbox, record: Record) -> None:
    cgroup = record.runtime.cgroup
    if cgroup is not None:
        for warning in ctx.cgroups.set_limits(cgroup, cgroup_limits(sandbox.unit.resources)):
            ctx.progress.note(f"sandbox/{sandbox.name}: {warning}")


def _write_ports(ctx: ApplyContext, sandbox: DesiredSandbox, record: Record) -> None:
    networks.update_ports(ctx, sandbox)


def _reattach(ctx: ApplyContext, sandbox: DesiredSandbox, record: Record) -> None:
    networks.attach(ctx, sandbox, record.runtime.pid)


def _record_only(ctx: ApplyContext, sandbox: DesiredSandbox, record: Record) -> None:
    """Keys the host does not hold (description, restart policy), or any key of a stopped
    sandbox (nothing of it runs): the record is enough."""


def _finish_stop(ctx: ApplyContext, sandbox: DesiredSandbox, record: Record) -> None:
    """A stopped sandbox whose stop was cut short: whatever of it still runs goes."""
    stops.stop(ctx, record)


# The in-place steps of plan/keys.py, for sandboxes.
_SANDBOX_STEPS = {
    "limits": _write_limits,
    "ports": _write_ports,
    "network": _reattach,
    "record": _record_only,
    "stop": _finish_stop,
}


def _sandbox_destroy(ctx: ApplyContext, action: Action) -> None:
    sandboxes.destroy(ctx, _record(ctx, action))


def _sandbox_stop(ctx: ApplyContext, action: Action) -> None:
    stops.stop(ctx, _record(ctx, action))


def _sandbox_start(ctx: ApplyContext, action: Action) -> None:
    stops.start(ctx, _record(ctx, action))


def _network_create(ctx: ApplyContext, action: Action) -> None:
    networks.create(ctx, ctx.desired.networks[action.name])


def _network_update(ctx: ApplyContext, action: Action) -> None:
    # With drift to repair besides (the "ensure" step), the whole idempotent create.
    ensure = networks.create if ENSURE in action.steps else networks.update
    ensure(ctx, ctx.desired.networks[action.name])


def _network_recreate(ctx: ApplyContext, action: Action) -> None:
    """Its sandboxes are recreated by the same plan (after this), on the new bridge."""
    networks.destroy(ctx, _record(ctx, action), keep_table=True)
    networks.create(ctx, ctx.desired.networks[action.name])


def _network_destroy(ctx: ApplyContext, action: Action) -> None:
    networks.destroy(ctx, _record(ctx, action))


def _slice_create(ctx: ApplyContext, action: Action) -> None:
    slices.create(ctx, ctx.desired.slices[action.name])


def _slice_update(ctx: ApplyContext, action: Action) -> None:
    ensure = slices.create if ENSURE in action.steps else slices.update
    ensure(ctx, ctx.desired.slices[action.name])


def _slice_destroy(ctx: ApplyContext, action: Action) -> None:
    slices.destroy(ctx, _record(ctx, action))


_HANDLERS = {
    ("sandbox", "create"): _sandbox_create,
    ("sandbox", "recreate"): _sandbox_recreate,
    ("sandbox", "repair"): _sandbox_repair,
    ("sandbox", "update"): _sandbox_update,
    ("sandbox", "destroy"): _sandbox_destroy,
    ("sandbox", "stop"): _sandbox_stop,
    ("sandbox", "start"): _sandbox_start,
    ("network", "create"): _network_create,
    ("network", "update"): _network_update,
    ("network", "repair"): _network_create,  # idempotent, as for slices
    ("network", "recreate"): _network_recreate,
    ("network", "destroy"): _network_destroy,
    ("slice", "create"): _slice_create,
    ("slice", "update"): _slice_update,
    ("slice", "repair"): _slice_create,  # create is idempotent: it rewrites what drifted
    ("slice", "recreate"): _slice_create,  # in its new place; the old cgroup goes in the sweep
    ("slice", "destroy"): _slice_destroy,
}
