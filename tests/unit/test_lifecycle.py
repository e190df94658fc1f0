"""Stopped sandboxes in the planners (issue #17): `sandman stop`, `start` and `restart` plans,
and what an apply plans for a sandbox that is stopped. Pure: records and drift are made here."""

from __future__ import annotations

import pathlib

import pytest

from sandman.observe.facts import ActualState, Drift, Record, Runtime
from sandman.observe.gather import _drift
from sandman.observe.records import record_of
from sandman.plan.diff import Plan, plan
from sandman.plan.lifecycle import lifecycle_plan, unknown_names
from sandman.units.read import read_units

CASES = pathlib.Path(__file__).parent / "plan_cases"
TAG = "smt"
EXITED = Drift("init", "running as pid 5", "exited")
INTERRUPTED = Drift("stop", "complete", "interrupted")


def _record(
    name: str, *, stopped: bool = False, tainted: bool = False, runtime: Runtime | None = None
) -> Record:
    unit = {"sandbox": {"command": ["/bin/sleep", "1000"]}, "resolved": {"slice_path": "sandman"}}
    made = record_of("sandbox", name, unit, runtime or Runtime(pid=42, start_time=7))
    return made._replace(stopped=stopped, tainted=tainted)


def _actual(*records: Record, drift: dict[str, Drift] | None = None) -> ActualState:
    found: dict[tuple[str, str], tuple[Drift, ...]] = {
        ("sandbox", name): (d,) for name, d in (drift or {}).items()
    }
    return ActualState(records={r.key: r for r in records}, drift=found)


def _lines(result: Plan) -> list[str]:
    return [action.describe() for action in result.actions]


# Sandboxes in each state: running, exited (restart = "no"), stopped, stopped with its stop cut
# short, tainted (a recreate cut short).
RUNNING = _record("run")
EXITED_ONE = _record("gone")
STOPPED = _record("held", stopped=True, runtime=Runtime())
HALF_STOPPED = _record("half", stopped=True)
TAINTED = _record("taint", tainted=True)
WORLD = _actual(
    RUNNING, EXITED_ONE, STOPPED, HALF_STOPPED, TAINTED, drift={"gone": EXITED, "half": INTERRUPTED}
)
ALL = ["run", "gone", "held", "half", "taint"]


def test_stop_stops_all_but_what_is_stopped_and_finishes_a_stop_cut_short() -> None:
    result, notes = lifecycle_plan(WORLD, "stop", ALL)
    assert _lines(result) == [
        "[] sandbox/gone: stop (stop asked)",
        "[] sandbox/half: stop (stop asked)",
        "[] sandbox/run: stop (stop asked)",
        "[] sandbox/taint: stop (stop asked)",
    ]
    assert notes == ("sandbox/held: already stopped",)
    assert result.summary()["stop"] == 4 and result.done() == "4 stopped"


def test_start_starts_all_that_do_not_run() -> None:
    result, notes = lifecycle_plan(WORLD, "start", ALL)
    assert _lines(result) == [
        "> sandbox/gone: start (start asked)",
        "> sandbox/half: start (start asked)",
        "> sandbox/held: start (start asked)",
        "> sandbox/taint: start (start asked)",
    ]
    assert notes == ("sandbox/run: already running (pid 42)",)


def test_restart_stops_what_is_not_stopped_then_starts_every_one() -> None:
    result, notes = lifecycle_plan(WORLD, "restart", ["run", "held", "run"])
    assert _lines(result) == [
        "[] sandbox/run: stop (restart asked)",
        "> sandbox/held: start (restart asked)",
        "> sandbox/run: start (restart asked)",
    ]
    assert notes == ()
    assert [a.to_json()["reason"] for a in result.actions] == ["restart"] * 3


def test_names_nothing_applied_carries_are_each_named() -> None:
    assert unknown_names(WORLD, ["run", "nope", "web", "nope"]) == [
        "sandbox/nope: nothing by that name is applied",
        "sandbox/web: nothing by that name is applied",
    ]
    assert unknown_names(WORLD, ALL) == []


def test_an_apply_plan_counts_no_stops_or_starts() -> None:
    assert set(Plan(()).summary()) == {"create", "update", "recreate", "destroy", "repair"}


# --- what apply plans for a stopped sandbox


def test_a_stopped_sandbox_is_never_started_by_apply_whatever_its_restart(
    tmp_path: pathlib.Path,
) -> None:
    """Its init is gone by design: no restart policy and no drift check brings it back."""
    (tmp_path / "web.sandbox.toml").write_text(
        '[sandbox]\ncommand = ["/bin/sleep", "1000"]\nrestart = "always"\n'
    )
    desired = read_units(str(tmp_path), TAG)
    web = record_of("sandbox", "web", desired.sandboxes["web"].canonical())
    assert plan(desired, ActualState({web.key: web}, {web.key: (EXITED,)})).actions != ()
    stopped = web._replace(stopped=True, runtime=Runtime())
    assert plan(desired, ActualState({web.key: stopped}, {})).actions == ()


def test_a_stop_cut_short_is_finished_by_apply_and_shown_as_a_repair() -> None:
    desired = read_units(str(CASES / "no-change" / "after"), TAG)
    web = record_of("sandbox", "web", desired.sandboxes["web"].canonical())._replace(stopped=True)
    actual = ActualState(records={web.key: web}, drift={web.key: (INTERRUPTED,)})
    (action,) = [a for a in plan(desired, actual).actions if a.object == "sandbox/web"]
    assert (action.kind, action.steps) == ("repair", ("stop",))
    assert action.describe() == "! sandbox/web: stop: expected complete, found interrupted"


def test_a_changed_unit_of_a_stop_cut_short_finishes_the_stop_then_records_it() -> None:
    desired = read_units(str(CASES / "memory-live" / "after"), TAG)
    before = read_units(str(CASES / "memory-live" / "before"), TAG)
    web = record_of("sandbox", "web", before.sandboxes["web"].canonical())._replace(stopped=True)
    actual = ActualState(records={web.key: web}, drift={web.key: (INTERRUPTED,)})
    (action,) = [a for a in plan(desired, actual).actions if a.object == "sandbox/web"]
    assert (action.kind, action.reason, action.steps) == ("update", "stopped", ("stop", "record"))
    assert action.lines() == [
        "~ sandbox/web: update the stopped sandbox's record (resources.memory_max); it stays"
        " stopped",
        "    resources.memory_max: 256M -> 512M",
        "    drift: stop: expected complete, found interrupted",
    ]
    assert all(change.live for change in action.changes)


# --- what observe reports of a stopped sandbox


@pytest.mark.parametrize(
    ("runtime", "found"),
    [
        (Runtime(), []),
        (Runtime(auto_ids=1048576, log="/x.log", stopped_at=1.0), []),
        (Runtime(cgroup="sandman-smt/web"), [Drift("stop", "complete", "interrupted")]),
        (Runtime(runtime_dir="/run/x/sandboxes/web"), [Drift("stop", "complete", "interrupted")]),
    ],
)
def test_a_stopped_sandbox_drifts_only_by_what_its_record_still_names(
    runtime: Runtime, found: list[Drift]
) -> None:
    assert _drift(_record("web", stopped=True, runtime=runtime), None) == found
