"""What every step of an apply shares: paths, the desired and observed state, progress."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sandman.observe.facts import ActualState, Record
from sandman.paths import Paths
from sandman.placement import in_scope
from sandman.progress import Progress
from sandman.record import field, record
from sandman.units.desired import Desired

if TYPE_CHECKING:
    from sandman.kernel.cgroup import CgroupDriver


@record
class ApplyContext:
    """Paths, desired and observed state, progress, and what the apply has done so far."""

    paths: Paths
    desired: Desired
    actual: ActualState
    progress: Progress
    # Records as they stand during this apply: observed ones, replaced as objects are done.
    records: dict[tuple[str, str], Record] = field(default_factory=dict)
    # Id ranges handed out by this apply before their sandbox is recorded (creates overlap).
    reserved_ids: list[tuple[int, int]] = field(default_factory=list)
    # Host ends of the veths of sandboxes stopped by this apply, checked at its end.
    stopped_veths: list[str] = field(default_factory=list)
    # This apply destroys every network, and with the last one the instance's nf_tables table:
    # the rules in it need not go one owner at a time (if the apply stops before, the rules
    # left are orphans, which the next apply removes).
    table_goes: bool = False
    # The /etc/hosts lines of each network's members, by network: the desired sandboxes do not
    # change during an apply (name_files.hosts_text).
    hosts_lines: dict[str | None, list[tuple[str, str]]] = field(default_factory=dict)
    # The /etc/hosts text of each network, by the sandboxes stopped when it was made: every
    # member's file is the same text, made once (per member, filtering every member's lines
    # made 1000 creates quadratic).
    hosts_texts: dict[tuple[str | None, frozenset[str]], str] = field(default_factory=dict)
    # The sandboxes stopped when the apply began and those it stops (stops.py): the only ones
    # whose record can say stopped (a create or a start records a running one; an update keeps
    # the old record's word), so the hosts files look at these, not at every record.
    stop_candidates: set[str] = field(default_factory=set)
    # Port forwards: the sandboxes whose rules this apply wrote, and whether the table's chains
    # and base rules are known to be there (networks.update_ports).
    ports_written: set[str] = field(default_factory=set)
    # The sandboxes whose source filter this apply wrote (networks.attach).
    filters_written: set[str] = field(default_factory=set)
    # Host id ranges declared or observed at the start (sandboxes._known_ids).
    known_ids: list[tuple[int, int]] | None = None
    # Every automatic block below it is taken (the last one this apply handed out ends there):
    # nothing this apply takes is given back before it ends, so the next search starts here.
    lowest_auto_ids: int = 0
    # Automatic ranges this apply gave back to their sandboxes (records', pinned), and the ranges
    # pinned beside persistent data when it began (sandboxes._spans_above_handed_out).
    kept_ids: list[tuple[int, int]] = field(default_factory=list)
    pinned_ids: list[tuple[int, int]] | None = None
    port_table_ready: bool = False
    _cgroups: CgroupDriver | None = None

    def __post_init__(self) -> None:
        self.records.update(self.actual.records)
        self.stop_candidates.update(
            name for (kind, name), r in self.records.items() if kind == "sandbox" and r.stopped
        )

    @property
    def cgroups(self) -> CgroupDriver:
        if self._cgroups is None:
            from sandman.kernel.cgroup import driver_for
            from sandman.placement import cgroup_base

            self._cgroups = driver_for(cgroup_base(self.paths.tag))
        return self._cgroups

    def make_cgroup(self, rel: str) -> list[str]:
        """Make `rel` and the cgroups above it up to the instance's; on a host run by systemd,
        first the instance's scope when there is none. Returns warnings."""
        base = self.cgroups.base
        if in_scope(base):
            from sandman.kernel import scope

            description = f"sandman: the sandboxes of {self.paths.state_dir}"
            if scope.ensure(self.cgroups.root, base, description):
                self.progress.note(f"made the systemd scope {base} for the sandboxes")
        return self.cgroups.create(rel)

    def runtime_dir(self, name: str) -> str:
        return os.path.join(self.paths.state_dir, "sandboxes", name)

    def persistent_dir(self, name: str) -> str:
        return self.paths.persistent_dir(name)
