"""Facts about the host, gathered once per run; the planner reads these and nothing else.

NamedTuples, not dataclasses: `status` imports this module, and dataclasses pull in `inspect`,
18 ms of a 100 ms status."""

from __future__ import annotations

from typing import Any, NamedTuple

ObjectKey = tuple[str, str]  # (kind, name): ("sandbox", "web")


class Record(NamedTuple):
    """What sandman last applied for one object, as written under the state dir."""

    kind: str
    name: str
    digest: str
    unit: dict[str, Any]
    tainted: bool
    runtime: dict[str, Any]

    @property
    def key(self) -> ObjectKey:
        return (self.kind, self.name)


class Drift(NamedTuple):
    """One way an object's live state differs from its record: what, expected, found."""

    what: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.what}: expected {self.expected}, found {self.found}"


ORPHAN_KINDS = ("cgroup", "mount", "rule", "table", "link", "path")


class Orphan(NamedTuple):
    """Something with this instance's naming that no record owns (see observe/orphans.py)."""

    kind: str  # one of ORPHAN_KINDS
    # What removal needs: a cgroup rel path, "KIND OWNER" of rules, a link's name, a mount
    # point or path relative to the state dir.
    name: str
    what: str  # for the plan: why it is an orphan


class ActualState(NamedTuple):
    """Records, their drift and the orphans; `ActualState.empty()` when nothing is applied."""

    records: dict[ObjectKey, Record]
    drift: dict[ObjectKey, tuple[Drift, ...]]
    orphans: tuple[Orphan, ...] = ()

    @classmethod
    def empty(cls) -> ActualState:
        return cls({}, {})

    def of_kind(self, kind: str) -> dict[str, Record]:
        return {name: record for (k, name), record in self.records.items() if k == kind}

    def addresses(self) -> dict[str, tuple[str | None, str | None]]:
        """The addresses the applied sandboxes got, so that "auto" keeps them (plan and apply
        both resolve with them: a plan must show what apply will do)."""
        kept: dict[str, tuple[str | None, str | None]] = {}
        for record in self.of_kind("sandbox").values():
            resolved = record.unit.get("resolved", {})
            kept[record.name] = (resolved.get("address"), resolved.get("address6"))
        return kept
