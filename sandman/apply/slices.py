"""Slices on the host: a cgroup per slice, nested like the units, with the slice's limits."""

from __future__ import annotations

from sandman.apply.context import ApplyContext
from sandman.observe.facts import Record
from sandman.observe.records import record_of, remove_record, write_record
from sandman.units.desired import DesiredSlice


def create(ctx: ApplyContext, item: DesiredSlice) -> Record:
    path = ctx.cgroups.path(item.path)
    for warning in ctx.cgroups.create(path):
        ctx.progress.note(warning)
    return update(ctx, item)


def update(ctx: ApplyContext, item: DesiredSlice) -> Record:
    path = ctx.cgroups.path(item.path)
    for warning in ctx.cgroups.set_limits(path, item.unit.slice):
        ctx.progress.note(f"slice/{item.name}: {warning}")
    record = record_of("slice", item.name, item.canonical(), {"cgroup": path})
    write_record(ctx.paths.state_dir, record)
    ctx.records[record.key] = record
    return record


def destroy(ctx: ApplyContext, record: Record) -> None:
    path = record.runtime.get("cgroup")
    if isinstance(path, str) and ctx.cgroups.exists(path):
        ctx.cgroups.kill(path)
        ctx.cgroups.remove(path)
    remove_record(ctx.paths.state_dir, "slice", record.name)
    ctx.records.pop(record.key, None)


def recreate(ctx: ApplyContext, item: DesiredSlice, old: Record) -> Record:
    """A slice that moved: its new cgroup first; the old one goes once empty (its sandboxes are
    recreated in the new place by the same plan)."""
    record = create(ctx, item)
    old_path = old.runtime.get("cgroup")
    if isinstance(old_path, str) and old_path != record.runtime["cgroup"]:
        ctx.pending_removals.append(old_path)
    return record
