"""plan(desired, actual) -> Plan: a pure function, no I/O.

Every object gets at most one action; objects with nothing to do are left out. Orphans (what
carries the instance's naming but no record owns) are removed first, with pruning. Order follows
dependencies: slices (parents first) and networks before the sandboxes that use them when
building, and the reverse when destroying.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from sandman import record as records
from sandman.digest import digest
from sandman.errors import UsageError
from sandman.observe.facts import ActualState, Drift, Orphan, Record
from sandman.plan.actions import DONE, PLANNED, Action, ActionKind, Change, Reason
from sandman.plan.keys import RECREATE, is_live, live_step, repair_step
from sandman.units.canonicals import Canonicals
from sandman.units.desired import Desired

_BUILD_ORDER = ("slice", "network", "sandbox")
_TARGET_KINDS = ("", "sandbox", "network", "slice")


@records.record(frozen=True)
class Plan:
    """The actions of one plan, in execution order."""

    actions: tuple[Action, ...]
    warnings: tuple[str, ...] = ()  # the loader's, passed on to the user

    def count(self, kind: str) -> int:
        return sum(1 for a in self.actions if a.kind == kind)

    def summary(self) -> dict[ActionKind, int]:
        return {k: self.count(k) for k in DONE if k in PLANNED or self.count(k)}

    def to_json(self) -> dict[str, Any]:
        report = {"actions": [a.to_json() for a in self.actions], "summary": self.summary()}
        return report | ({"warnings": list(self.warnings)} if self.warnings else {})

    def done(self) -> str:
        """What carrying it out did: `2 created, 1 updated`."""
        return ", ".join(f"{n} {DONE[kind]}" for kind, n in self.summary().items() if n)


def plan(state: Desired | Canonicals, actual: ActualState, prune: bool = True) -> Plan:
    """The plan from the canonical forms alone: the same from a Desired and from the unit
    cache's Canonicals of it."""
    desired = state.canonicals() if isinstance(state, Desired) else state
    build: list[Action] = []
    for kind in _BUILD_ORDER:
        for name, canonical in _desired_of(desired, kind):
            action = _action_for(kind, name, canonical, actual) or _follow(
                canonical, build, actual.records.get((kind, name)), kind, name
            )
            if action is not None:
                build.append(action)
    if not prune:
        return Plan(tuple(build), desired.warnings)
    # Orphans go first: a create often makes the very object a killed apply left behind. Then
    # removed sandboxes, freeing names, addresses and ports that new ones may take; removed
    # networks and slices go last, once no sandbox of this plan stands on them.
    return Plan(
        (
            *(orphan_removal(orphan) for orphan in actual.orphans),
            *_destroys(desired, actual, "sandbox"),
            *build,
            *_destroys(desired, actual, "network"),
            *_destroys(desired, actual, "slice"),
        ),
        desired.warnings,
    )


def _desired_of(desired: Canonicals, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    objects = desired.of_kind(kind)
    if kind == "slice":  # parents first: a slice's path runs from the root slice to it
        for name in sorted(objects, key=lambda n: (_slice_depth(objects[n].form), n)):
            yield name, objects[name].form
    else:
        for name in sorted(objects):
            yield name, objects[name].form


def _slice_depth(canonical: dict[str, Any]) -> int:
    return len(str(canonical["resolved"]["path"]).split("/"))


def _action_for(
    kind: str, name: str, canonical: dict[str, Any], actual: ActualState
) -> Action | None:
    record = actual.records.get((kind, name))
    if record is None:
        return Action("create", kind, name, "new_unit", attributes=_attributes(canonical))
    if record.stopped:
        return _stopped_action(kind, name, record, canonical, actual)
    if record.tainted:
        return Action("recreate", kind, name, "tainted")
    drift = tuple(d for d in actual.drift.get((kind, name), ()) if _repairs(canonical, d))
    if record.digest == digest(canonical):
        return _repair_action(kind, name, drift) if drift else None
    return _change_action(kind, name, record, canonical, drift)


def _repair_action(kind: str, name: str, drift: tuple[Drift, ...]) -> Action:
    """In place when every drift has an in-place step; else a recreate, shown as one."""
    steps = {repair_step(kind, d.what) for d in drift}
    described = tuple(str(d) for d in drift)
    if RECREATE in steps:
        return Action("recreate", kind, name, "drift", drift=described)
    return Action("repair", kind, name, "drift", drift=described, steps=tuple(sorted(steps)))


def _stopped_action(
    kind: str, name: str, record: Record, canonical: dict[str, Any], actual: ActualState
) -> Action | None:
    """A stopped sandbox stays stopped: nothing of it runs to replace or repair. A changed unit
    (any key: nothing is recreated) changes its record, and the next `sandman start` runs it;
    a stop that was cut short is finished."""
    drift = actual.drift.get((kind, name), ())
    described = tuple(str(d) for d in drift)
    finish = tuple(sorted({repair_step(kind, d.what) for d in drift}))
    changes = tuple(
        Change(key, before, after, True)
        for key, before, after in _differences(record.unit, canonical)
    )
    if changes:
        steps = (*finish, "record")
        return Action("update", kind, name, "stopped", changes, drift=described, steps=steps)
    return Action("repair", kind, name, "drift", drift=described, steps=finish) if drift else None


def _follow(
    canonical: dict[str, Any], build: list[Action], record: Record | None, kind: str, name: str
) -> Action | None:
    """A sandbox whose network is made anew is made anew too: its veth hung on the old bridge.
    A stopped one has no veth, and stays stopped."""
    if kind != "sandbox" or (record is not None and record.stopped):
        return None
    network = canonical.get("network")
    if not network:
        return None
    for action in build:
        if action.object == f"network/{network['attach']}" and action.kind == "recreate":
            return Action(
                "recreate", kind, name, "cannot_update_in_place", requires_recreate=(action.object,)
            )
    return None


def _repairs(canonical: dict[str, Any], drift: Drift) -> bool:
    """An init that exited is started again only as its restart policy says. Its exit code is
    unknown once no sandman process watches it, so "on-failure" takes an unknown end as failure."""
    if drift.what != "init":
        return True
    return bool(canonical.get("sandbox", {}).get("restart", "no") != "no")


def _change_action(
    kind: str, name: str, record: Record, canonical: dict[str, Any], drift: tuple[Drift, ...]
) -> Action | None:
    """The unit changed. Drift found meanwhile goes with the change, shown and repaired by the
    same action: a limit set by hand is what the object runs with until the change lands."""
    changes = tuple(
        Change(key, before, after, is_live(kind, key))
        for key, before, after in _differences(record.unit, canonical)
    )
    if not changes:
        return _repair_action(kind, name, drift) if drift else None
    described = tuple(str(d) for d in drift)
    recreate = tuple(c.key for c in changes if not c.live)
    if recreate:
        return Action(
            "recreate",
            kind,
            name,
            "cannot_update_in_place",
            changes,
            drift=described,
            requires_recreate=recreate,
        )
    steps = {live_step(kind, c.key) or RECREATE for c in changes}
    steps |= {repair_step(kind, d.what) for d in drift}
    if RECREATE in steps:
        return Action("recreate", kind, name, "drift", changes, drift=described)
    return Action("update", kind, name, "changed", changes, described, steps=tuple(sorted(steps)))


def _differences(
    before: Mapping[str, Any], after: Mapping[str, Any]
) -> Iterator[tuple[str, Any, Any]]:
    flat_before, flat_after = _flatten(before), _flatten(after)
    for key in sorted(flat_before.keys() | flat_after.keys()):
        old, new = flat_before.get(key), flat_after.get(key)
        if old != new:
            yield key, old, new


def _attributes(canonical: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    """What a create shows: every setting with a value, an automatic address as resolved."""
    flat = _flatten(canonical)
    shown = [
        (key, value)
        for key, value in flat.items()
        if not key.startswith("resolved.") and value not in (None, [], {}, "")
    ]
    from_image = flat.get("resolved.from_image")
    if from_image:
        keys = ", ".join(f"sandbox.{key}" for key in from_image)
        shown.append((f"image {flat.get('rootfs.image')}'s config gives", keys))
    if flat.get("network.address") == "auto" and flat.get("resolved.address"):
        shown = [
            (k, f"auto ({flat['resolved.address']})" if k == "network.address" else v)
            for k, v in shown
        ]
    return tuple(shown)


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Tables become dotted keys; arrays stay whole values (a list of mounts changes as one)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{dotted}."))
        else:
            flat[dotted] = value
    return flat


def _destroys(desired: Canonicals, actual: ActualState, kind: str) -> Iterator[Action]:
    declared = desired.names(kind)
    gone = [r for r in actual.of_kind(kind).values() if r.name not in declared]
    yield from _destroy_in_order(gone, kind, "unit_removed")


def _destroy_in_order(records: list[Record], kind: str, reason: Reason) -> Iterator[Action]:
    """Deepest first: a slice goes after the slices below it."""
    for record in sorted(records, key=lambda r: (-_depth(r), r.name)):
        yield Action("destroy", kind, record.name, reason)


def destroy_problems(
    actual: ActualState, wanted: set[tuple[str, str]], named: set[tuple[str, str]]
) -> list[str]:
    """Why a destroy of `wanted` must be refused: a name given on the command line (`named`)
    that nothing applied carries, or a network or slice that would go from under sandboxes (or
    slices) that stay."""
    problems = [
        f"{kind}/{name}: nothing by that name is applied"
        for kind, name in sorted(named - set(actual.records))
    ]
    staying = [r for r in actual.records.values() if r.key not in wanted]
    for kind, name in sorted(wanted & set(actual.records)):
        record = actual.records[(kind, name)]
        users = sorted(r.key[0] + "/" + r.name for r in staying if _stands_on(r, record))
        if users:
            problems.append(
                f"{kind}/{name}: {', '.join(users)} still use it; destroy them with it "
                f"(sandman destroy {kind}/{name} {' '.join(users)}) or change their units"
            )
    return problems


def _stands_on(record: Record, base: Record) -> bool:
    """A sandbox on the network `base`, or a sandbox or slice inside the slice `base`."""
    if base.kind == "network":
        return record.kind == "sandbox" and record.sandbox.network == base.name
    if base.kind != "slice" or record.kind == "network":
        return False
    path = base.slice.path
    inside = record.sandbox.slice_path if record.kind == "sandbox" else record.slice.path
    return bool(path) and (
        (inside == path and record.kind == "sandbox") or inside.startswith(path + "/")
    )


def destroy_plan(actual: ActualState, wanted: set[tuple[str, str]] | None = None) -> Plan:
    """What `destroy` does: the applied objects of `wanted` (KIND, NAME), every one without it,
    sandboxes first, then networks, then slices; and, when that leaves nothing applied, the
    orphans first, as an apply's prune would. `plan -destroy`, in terraform's words."""
    chosen = [r for r in actual.records.values() if wanted is None or r.key in wanted]
    actions: list[Action] = []
    if len(chosen) == len(actual.records):
        actions += [orphan_removal(orphan) for orphan in actual.orphans]
    for kind in reversed(_BUILD_ORDER):
        actions += _destroy_in_order([r for r in chosen if r.kind == kind], kind, "requested")
    return Plan(tuple(actions))


def orphan_removal(orphan: Orphan) -> Action:
    return Action("destroy", orphan.kind, orphan.name, "orphan", drift=(orphan.what,))


def _depth(record: Record) -> int:
    return len(record.slice.path.split("/")) if record.kind == "slice" else 1


def targeted(result: Plan, desired: Desired, target: str) -> Plan:
    """Only the actions for `target` (NAME of a sandbox, or KIND/NAME) and what it stands on: its
    slices and its network. Everything else is left for a later plan. A target that is neither
    declared nor in the plan (a typo) is a UsageError: "No changes" would hide the mistake."""
    kind, _, name = target.rpartition("/")
    obj = f"{kind or 'sandbox'}/{name}"
    declared = name in desired.names(kind or "sandbox") if kind in _TARGET_KINDS else False
    if not declared and all(a.object != obj for a in result.actions):
        raise UsageError(
            f"--target {target}: no {obj} is declared in the unit directory or applied; "
            "name a sandbox (NAME) or KIND/NAME with KIND sandbox, network or slice"
        )
    wanted = {obj}
    sandbox = desired.sandboxes.get(name) if kind in ("", "sandbox") else None
    if sandbox is not None:
        wanted |= {f"slice/{part}" for part in sandbox.slice_path[1:]}
        if sandbox.unit.network is not None:
            wanted.add(f"network/{sandbox.unit.network.attach}")
    if kind == "slice" and name in desired.slices:
        wanted |= {f"slice/{part}" for part in desired.slices[name].path[1:]}
    return Plan(tuple(a for a in result.actions if a.object in wanted), result.warnings)
