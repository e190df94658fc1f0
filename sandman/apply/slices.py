"""Slices on the host: a cgroup per slice, nested like the units, with the slice's limits.

A slice that moves is made anew in its new place (create); the old cgroup, which no record owns
once the slice's sandboxes are recreated in the new place, goes in the apply's final sweep."""

from __future__ import annotations

from sandman.apply import faults
from sandman.apply.context import ApplyContext
from sandman.apply.limits import cgroup_limits
from sandman.errors import ApplyError
from sandman.kernel.cgroup_common import LimitError
from sandman.observe.facts import Record, Runtime
from sandman.observe.records import record_of, remove_record, write_record
from sandman.units.desired import DesiredSlice


def create(ctx: ApplyContext, item: DesiredSlice) -> Record:
    path = ctx.cgroups.path(item.path)
    for warning in ctx.make_cgroup(path):
        ctx.progress.note(warning)
    faults.step(f"slice/{item.name}: cgroup made")
    return update(ctx, item)


def update(ctx: ApplyContext, item: DesiredSlice) -> Record:
    path = ctx.cgroups.path(item.path)
    try:
        warnings = ctx.cgroups.set_limits(path, cgroup_limits(item.unit.slice))
    except LimitError as exc:
        where = f"{item.file}: slice.{exc.key}"
        raise ApplyError(f"slice/{item.name}", f"{where}: writing `{path}`", exc) from exc
    for warning in warnings:
        ctx.progress.note(f"slice/{item.name}: {warning}")
    faults.step(f"slice/{item.name}: limits written")
    record = record_of("slice", item.name, item.canonical(), Runtime(cgroup=path), item.file)
    write_record(ctx.paths.state_dir, record)
    ctx.records[record.key] = record
    return record


def destroy(ctx: ApplyContext, record: Record) -> None:
    path = record.runtime.cgroup
    if path is not None and ctx.cgroups.exists(path):
        ctx.cgroups.kill(path)
        ctx.cgroups.remove(path)
        faults.step(f"slice/{record.name}: cgroup removed")
    remove_record(ctx.paths.state_dir, "slice", record.name)
    ctx.records.pop(record.key, None)
