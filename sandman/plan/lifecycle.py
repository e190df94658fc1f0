"""The plans of `sandman stop`, `start` and `restart`: pure, like the apply planner.

They act on recorded sandboxes by name, never on the unit directory: `stop` ends what runs and
keeps the record, marked stopped; `start` runs the recorded unit again (a stopped sandbox, or one
whose init exited); `restart` is a stop of what runs, then a start. A sandbox already in the
state asked for gets no action and a note instead.
"""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
from collections.abc import Iterable
from typing import NamedTuple

from sandman.observe.facts import ActualState, Record
from sandman.plan.actions import Action, Reason
from sandman.plan.diff import Plan

VERBS = ("stop", "start", "restart")


class LifecyclePlan(NamedTuple):
    """The actions, and what was left alone and why (`sandbox/web: already stopped`)."""

    plan: Plan
    notes: tuple[str, ...]


def unknown_names(actual: ActualState, names: Iterable[str]) -> list[str]:
    """Why names given on the command line are refused: none of them may be left unknown."""
    return [
        f"sandbox/{name}: nothing by that name is applied"
        for name in sorted(set(names))
        if ("sandbox", name) not in actual.records
    ]


def lifecycle_plan(actual: ActualState, verb: str, names: Iterable[str]) -> LifecyclePlan:
    """The plan of `verb` for the named (recorded) sandboxes, in name order: for a restart,
    every stop before the starts, so that a start never waits on another's stop."""
    records = [actual.records[("sandbox", name)] for name in sorted(set(names))]
    stops: list[Action] = []
    starts: list[Action] = []
    notes: list[str] = []
    reason: Reason = "restart" if verb == "restart" else "requested"
    for record in records:
        if verb in ("stop", "restart") and _to_stop(actual, record):
            stops.append(Action("stop", "sandbox", record.name, reason))
        elif verb == "stop":
            notes.append(f"sandbox/{record.name}: already stopped")
        if verb == "restart" or (verb == "start" and not _runs(actual, record)):
            starts.append(Action("start", "sandbox", record.name, reason))
        elif verb == "start":
            notes.append(f"sandbox/{record.name}: already running (pid {record.runtime.pid})")
    return LifecyclePlan(Plan((*stops, *starts)), tuple(notes))


def _runs(actual: ActualState, record: Record) -> bool:
    """Its init runs (observe reports one that is gone as drift), whatever else drifted."""
    if record.stopped or record.tainted:
        return False
    return not any(d.what == "init" for d in actual.drift.get(record.key, ()))


def _to_stop(actual: ActualState, record: Record) -> bool:
    """Anything not stopped: a running init, or an exited one's cgroup and runtime dir. A
    stopped sandbox's only drift is a stop cut short, which a stop finishes."""
    return not record.stopped or bool(actual.drift.get(record.key))
