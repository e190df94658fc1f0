"""gather(): the only entry point of observe; reads the host once per run.

Records say what was applied; the kernel says what is. Each difference is a Drift the planner
turns into a repair: an init that is gone, a cgroup limit written by hand, a cgroup removed, a
veth, bridge, address or rule missing. What carries the instance's naming and no record owns is
an Orphan the planner removes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sandman.kernel.cgroup_common import BYTE_LIMITS
from sandman.observe import procs
from sandman.observe.facts import ActualState, Drift, ObjectKey, Orphan, Record
from sandman.observe.network import NetworkFacts
from sandman.observe.orphans import find as find_orphans
from sandman.observe.orphans import owned_links as link_names
from sandman.observe.records import cgroup_limits_of, read_records
from sandman.units.names import instance_tag

if TYPE_CHECKING:
    from sandman.kernel.cgroup import CgroupDriver


def gather(
    state_dir: str, cgroups: CgroupDriver | None = None, orphans: bool = False
) -> ActualState:
    """Records and their drift; with `orphans`, also what carries the instance's naming but has
    no record (plan and apply look for them, status does not pay for it)."""
    records = {record.key: record for record in read_records(state_dir)}
    tag = instance_tag(state_dir)
    if cgroups is None and (records or orphans):
        from sandman.kernel.cgroup import driver_for
        from sandman.placement import cgroup_base

        cgroups = driver_for(cgroup_base(tag))
    networked = orphans or any(_on_network(r) for r in records.values())
    links = NetworkFacts.read(tag, link_names(records.values())) if networked else None
    drift: dict[ObjectKey, tuple[Drift, ...]] = {}
    for key, record in records.items():
        found = tuple(_drift(record, cgroups))
        if not found and links is not None and not record.stopped:
            found = tuple(links.drift(record))
        if found:
            drift[key] = found
    left: tuple[Orphan, ...] = ()
    if orphans:
        left = find_orphans(state_dir, tag, records.values(), cgroups, links)
    owners = frozenset(links.owned) if links is not None else None
    return ActualState(records=records, drift=drift, orphans=left, rule_owners=owners)


def _on_network(record: Record) -> bool:
    return record.kind == "network" or (record.kind == "sandbox" and bool(record.sandbox.network))


def _drift(record: Record, cgroups: CgroupDriver | None) -> list[Drift]:
    if record.kind == "sandbox" and record.stopped:
        return _stop_drift(record)
    if record.kind == "sandbox":
        pid = record.runtime.pid
        if not procs.is_running(pid, record.runtime.start_time):
            return [Drift("init", f"running as pid {pid}", "exited")]
        limits = _limit_drift(record, cgroups, "resources", record.sandbox.resources)
        return _keeper_drift(record) + _mount_drift(record, pid) + limits
    if record.kind == "slice":
        return _limit_drift(record, cgroups, "slice", record.slice.limits)
    return []


def _stop_drift(record: Record) -> list[Drift]:
    """A stopped sandbox has nothing on the host that could drift. A record that still names
    the instance it ended (an init, a cgroup, a runtime dir) is of a stop that was cut short."""
    runtime = record.runtime
    if not (runtime.pid or runtime.cgroup or runtime.runtime_dir):
        return []
    found = "interrupted"
    if procs.is_running(runtime.pid, runtime.start_time):
        found += f" (its init, pid {runtime.pid}, still runs)"
    return [Drift("stop", "complete", found)]


def _keeper_drift(record: Record) -> list[Drift]:
    """A booted sandbox whose console keeper is gone (killed): nothing reads its console, and
    `sandman console` has nothing to attach to. Its repair is a recreate: the pty's master went
    with the keeper and cannot be opened again, and /dev/console inside is bound to that pty."""
    runtime = record.runtime
    if not runtime.keeper_pid or procs.is_running(runtime.keeper_pid, runtime.keeper_start_time):
        return []
    return [Drift("console", f"kept by pid {runtime.keeper_pid}", "no keeper")]


def _mount_drift(record: Record, pid: int) -> list[Drift]:
    """A declared mount the init no longer has (unmounted from inside, or with nsenter from the
    host). Its namespaces cannot change from outside: only the init itself can leave one, and a
    replaced init is caught by its start time."""
    declared = record.sandbox.mount_targets
    if not declared:
        return []
    present = procs.mount_points(pid)
    if present is None:
        return []
    return [
        Drift(f"mount {target}", "mounted", "missing")
        for target in declared
        if os.path.normpath(target) not in present
    ]


def _limit_drift(
    record: Record, cgroups: CgroupDriver | None, table: str, declared: Mapping[str, Any]
) -> list[Drift]:
    cgroup = record.runtime.cgroup
    if cgroups is None or cgroup is None:
        return []
    try:
        expected = cgroups.expected_limits(cgroup, cgroup_limits_of(declared))
        found = cgroups.read_limits(cgroup)
    except FileNotFoundError:
        return [Drift("cgroup", f"`{cgroup}` present", "missing")]
    except OSError:
        return []
    return [
        Drift(f"{table}.{key}", show_limit(key, value), show_limit(key, found.get(key)))
        for key, value in expected.items()
        if key in found and found[key] != value
    ]


def show_limit(key: str, value: object) -> str:
    """A limit as a unit writes it: sizes with K/M/G, cpu_max in percent."""
    if value is None:
        return "unlimited"
    if key in BYTE_LIMITS and isinstance(value, int):
        from sandman.units.scalars import format_size  # only when a limit drifted

        return format_size(value)
    if key == "cpu_max" and isinstance(value, float | int):
        return f"{value:g}%"
    return str(value)
