"""The actions a plan is made of. Each explains itself; only the applier executes them."""

from __future__ import annotations

from typing import Any, Literal

from sandman.record import field, record

ActionKind = Literal["create", "update", "recreate", "destroy", "repair", "stop", "start"]
Reason = Literal[
    "new_unit",
    "unit_removed",
    "requested",  # `sandman destroy`, `stop` or `start` named it
    "restart",  # `sandman restart` named it: a stop (when it runs), then a start
    "stopped",  # the unit of a stopped sandbox changed: its record takes it, it stays stopped
    "changed",
    "cannot_update_in_place",
    "tainted",
    "drift",
    "orphan",
]

SYMBOLS: dict[ActionKind, str] = {
    "create": "+",
    "update": "~",
    "recreate": "-/+",
    "destroy": "-",
    "repair": "!",
    "stop": "[]",
    "start": ">",
}
# What an action of each kind did, for the lines that close an apply or a daemon pass.
DONE: dict[ActionKind, str] = {
    "create": "created",
    "update": "updated",
    "recreate": "recreated",
    "destroy": "destroyed",
    "repair": "repaired",
    "stop": "stopped",
    "start": "started",
}
# The kinds an apply's plan is made of, counted in every summary; stop and start (only of the
# `stop`, `start` and `restart` verbs) only where they occur.
PLANNED: tuple[ActionKind, ...] = ("create", "update", "recreate", "destroy", "repair")


@record(frozen=True)
class Change:
    """One key whose value differs between the record and the unit."""

    key: str
    before: Any
    after: Any
    live: bool

    def describe(self) -> str:
        forces = "" if self.live else "  (forces recreate)"
        return (
            f"{self.key}: {_show(self.key, self.before)} -> {_show(self.key, self.after)}{forces}"
        )

    def to_json(self) -> dict[str, Any]:
        return {"key": self.key, "from": self.before, "to": self.after, "live": self.live}


@record(frozen=True)
class Action:
    """One object's action: what, why, and the changes or drift behind it."""

    kind: ActionKind
    # "sandbox" | "network" | "slice"; for an orphan, what it is: "cgroup", "link", "rule"...
    object_kind: str
    name: str
    reason: Reason
    changes: tuple[Change, ...] = ()
    drift: tuple[str, ...] = ()
    # The keys whose change forced a recreate: they explain, they never steer execution.
    requires_recreate: tuple[str, ...] = field(default=())
    # For an update or an in-place repair: the steps the applier runs (plan/keys.py), all of it.
    steps: tuple[str, ...] = field(default=())
    # For a create: the object's settings (dotted key, value), shown under it.
    attributes: tuple[tuple[str, Any], ...] = field(default=())

    @property
    def object(self) -> str:
        return f"{self.object_kind}/{self.name}"

    def describe(self) -> str:
        """One line: the action and why. lines() adds the values beneath it."""
        symbol = SYMBOLS[self.kind]
        if self.reason == "stopped":
            keys = ", ".join(c.key for c in self.shown_changes())
            detail = f"update the stopped sandbox's record ({keys}); it stays stopped"
        elif self.kind == "update":
            detail = f"update in place ({', '.join(c.key for c in self.shown_changes())})"
        elif self.kind == "recreate" and self.requires_recreate:
            forcing = [k for k in self.requires_recreate if not _internal(k)]
            detail = f"recreate ({', '.join(forcing or self.requires_recreate)} cannot change live)"
        elif self.kind == "recreate" and self.reason == "drift":
            detail = f"recreate (drift: {'; '.join(self.drift)})"
        elif self.kind == "repair":
            detail = "; ".join(self.drift)
        elif self.reason == "orphan":
            detail = f"remove the orphan ({'; '.join(self.drift)})"
        elif self.reason == "requested":
            detail = f"{self.kind} ({self.kind} asked)"
        else:
            detail = f"{self.kind} ({_REASONS.get(self.reason, self.reason.replace('_', ' '))})"
        return f"{symbol} {self.object}: {detail}"

    def lines(self) -> list[str]:
        """describe(), then one line per changed key (old -> new) or, for a create, per setting,
        and the drift a change repairs too (unless describe() names it already)."""
        details = [change.describe() for change in self.shown_changes()]
        details += [f"{key} = {_show(key, value)}" for key, value in self.attributes]
        if self.changes and self.reason != "drift":
            details += [f"drift: {drift}" for drift in self.drift]
        return [self.describe(), *(f"    {line}" for line in details)]

    def shown_changes(self) -> tuple[Change, ...]:
        """The changes a user wrote: keys sandman derives (resolved.*) only when nothing else
        changed, since they then are the whole story (an automatic address moved)."""
        declared = tuple(c for c in self.changes if not _internal(c.key))
        return declared or self.changes

    def to_json(self) -> dict[str, Any]:
        return {
            "object": self.object,
            "action": self.kind,
            "reason": self.reason,
            "changes": [c.to_json() for c in self.changes],
            "requires_recreate": list(self.requires_recreate),
            "drift": list(self.drift),
            "steps": list(self.steps),
        }


_REASONS = {"new_unit": "new unit", "unit_removed": "unit removed", "restart": "restart asked"}


def _internal(key: str) -> bool:
    return key.startswith("resolved.")


def _show(key: str, value: Any) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, int) and not isinstance(value, bool) and _is_size(key):
        # Here, not at the top: a plan that changes no size (a no-op apply) does not import
        # scalars, and with it datetime and signals, about 1.5 ms.
        from sandman.units.scalars import format_size

        return format_size(value)
    if isinstance(value, str):
        return value
    if key == "network.ports" and isinstance(value, list):
        return "[" + ", ".join(_port(p) for p in value) + "]"
    import json

    return json.dumps(value, separators=(",", ":"))


def _is_size(key: str) -> bool:
    """Whether the dotted unit KEY (`resources.memory_max`) holds a size in bytes."""
    return key.rsplit(".", 1)[-1] in _size_fields()


def _size_fields() -> frozenset[str]:
    # Imported here, not above: plan/ loads without the unit classes (the daemon imports it
    # before its first pass), and a value shown in a plan comes from units that were loaded.
    from sandman.units.plain import SIZE_FIELDS

    return SIZE_FIELDS


def _port(port: Any) -> str:
    if not isinstance(port, dict):
        return str(port)
    address = port.get("host_address") or "*"
    return f"{address}:{port.get('host')}->{port.get('sandbox')}/{port.get('protocol')}"
