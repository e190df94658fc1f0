"""The planner, case by case: `plan_cases/<case>/` holds the units applied before, the units wanted
after, optional `options.json` (prune, tainted or stopped records) and `expected.txt`, the lines
`plan` prints for the actions (each action's line, then its changes or settings)."""

from __future__ import annotations

import json
import pathlib

import pytest

from sandman.cli import main
from sandman.digest import digest
from sandman.errors import UsageError
from sandman.observe.facts import ActualState, Drift, Orphan, Record
from sandman.observe.gather import show_limit
from sandman.observe.records import record_of, write_record
from sandman.plan.diff import destroy_plan, destroy_problems, plan, targeted
from sandman.plan.keys import LIVE_KEYS, is_live
from sandman.record import replace
from sandman.units.desired import Desired
from sandman.units.names import instance_tag
from sandman.units.read import read_units

CASES = pathlib.Path(__file__).parent / "plan_cases"
TAG = "smt"


def records_of(desired: Desired) -> list[Record]:
    """The records an apply of `desired` leaves behind."""
    records = [record_of("slice", n, s.canonical()) for n, s in desired.slices.items()]
    records += [record_of("network", n, s.canonical()) for n, s in desired.networks.items()]
    records += [record_of("sandbox", n, s.canonical()) for n, s in desired.sandboxes.items()]
    return records


def actual_for(case: pathlib.Path, options: dict[str, object]) -> ActualState:
    if not (case / "before").is_dir():
        return ActualState.empty()
    tainted, stopped = options.get("tainted", []), options.get("stopped", [])
    assert isinstance(tainted, list) and isinstance(stopped, list)
    records = {}
    for record in records_of(read_units(str(case / "before"), TAG)):
        what = f"{record.kind}/{record.name}"
        records[record.key] = record._replace(tainted=what in tainted, stopped=what in stopped)
    return ActualState(records=records, drift={})


@pytest.mark.parametrize("case", sorted(p.name for p in CASES.iterdir()))
def test_plan_case(case: str) -> None:
    directory = CASES / case
    options_file = directory / "options.json"
    options = json.loads(options_file.read_text()) if options_file.exists() else {}
    desired = read_units(str(directory / "after"), TAG)
    result = plan(desired, actual_for(directory, options), prune=options.get("prune", True))
    expected = (directory / "expected.txt").read_text().splitlines()
    assert [line for a in result.actions for line in a.lines()] == expected


def test_second_plan_after_apply_is_empty() -> None:
    desired = read_units(str(CASES / "no-change" / "after"), TAG)
    actual = ActualState(records={r.key: r for r in records_of(desired)}, drift={})
    assert plan(desired, actual).actions == ()


def test_plan_is_pure_and_deterministic() -> None:
    desired = read_units(str(CASES / "new-units" / "after"), TAG)
    first = plan(desired, ActualState.empty())
    second = plan(desired, ActualState.empty())
    assert first == second


def test_live_key_table() -> None:
    assert is_live("sandbox", "resources.memory_max")
    assert is_live("sandbox", "sandbox.description")
    assert not is_live("sandbox", "sandbox.command")
    assert not is_live("sandbox", "rootfs.image")
    assert not is_live("slice", "slice.parent")
    assert set(LIVE_KEYS) == {"sandbox", "network", "slice"}


def _offline_units(directory: pathlib.Path, memory: str) -> str:
    """Units with no network: a plan of them reads nothing of the kernel but cgroups and records,
    which these tests control (a network would be observed through real links)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "batch.slice.toml").write_text("[slice]\npids_max = 100\n")
    (directory / "web.sandbox.toml").write_text(
        '[sandbox]\ncommand = ["/bin/httpd", "-f"]\nslice = "batch"\n'
        f'[resources]\nmemory_max = "{memory}"\n'
    )
    return str(directory)


def test_plan_json_shape(tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]) -> None:
    state = tmp_path / "state"
    before = read_units(_offline_units(tmp_path / "before", "256M"), instance_tag(str(state)))
    for record in records_of(before):
        write_record(str(state), record)
    after = _offline_units(tmp_path / "after", "512M")
    code = main(["plan", after, "--json", "--state-dir", str(state), "--detailed-exitcode"])
    data = json.loads(capsys.readouterr().out)
    assert code == 3
    assert data["summary"] == {"create": 0, "update": 1, "recreate": 0, "destroy": 0, "repair": 0}
    (action,) = data["actions"]
    assert action["object"] == "sandbox/web"
    assert action["action"] == "update"
    assert action["changes"] == [
        {"key": "resources.memory_max", "from": 268435456, "to": 536870912, "live": True}
    ]


def test_plan_text_and_exit_codes(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    units = _offline_units(tmp_path / "units", "256M")
    state = str(tmp_path / "state")
    # What a create needs on the host is checked before (observe/preflight): an image whose
    # /bin/httpd is an executable file.
    images = tmp_path / "images"
    (images / "busybox" / "bin").mkdir(parents=True)
    (images / "busybox" / "bin" / "httpd").write_bytes(b"")
    (images / "busybox" / "bin" / "httpd").chmod(0o755)
    image_dir = ("--image-dir", str(images))
    assert main(["plan", units, "--state-dir", state, *image_dir]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "Plan: 2 to create, 0 to update, 0 to recreate, 0 to destroy."
    assert main(["plan", units, "--state-dir", state, "--detailed-exitcode", *image_dir]) == 3
    capsys.readouterr()
    (images / "busybox" / "bin" / "httpd").unlink()
    assert main(["plan", units, "--state-dir", state, *image_dir]) == 2
    assert "web.sandbox.toml: sandbox.command: `/bin/httpd` is not an executable file" in (
        capsys.readouterr().err
    )
    capsys.readouterr()
    desired = read_units(units, instance_tag(state))
    for record in records_of(desired):
        write_record(state, record)
    assert main(["plan", units, "--state-dir", state, "--detailed-exitcode"]) == 0
    assert capsys.readouterr().out == f"No changes: the host matches {units}.\n"


def _with_drift(case: str, drift: tuple[Drift, ...]) -> tuple[Desired, ActualState]:
    desired = read_units(str(CASES / case / "after"), TAG)
    records = {r.key: r for r in records_of(desired)}
    return desired, ActualState(records=records, drift={("sandbox", "web"): drift})


def test_exited_init_is_started_again_only_when_restart_says_so() -> None:
    gone = (Drift("init", "running as pid 5", "exited"),)
    desired, actual = _with_drift("no-change", gone)
    assert plan(desired, actual).actions == ()  # restart = "no" (the default)
    restarting = replace(
        desired.sandboxes["web"],
        unit=desired.sandboxes["web"].unit.model_copy(
            update={
                "sandbox": desired.sandboxes["web"].unit.sandbox.model_copy(
                    update={"restart": "always"}
                )
            }
        ),
    )
    desired = replace(desired, sandboxes={**desired.sandboxes, "web": restarting})
    records = {r.key: r for r in records_of(desired)}
    result = plan(desired, ActualState(records=records, drift={("sandbox", "web"): gone}))
    # A new init is a recreate, and the plan says so (#15): no "!" that hides one.
    assert [a.describe() for a in result.actions] == [
        "-/+ sandbox/web: recreate (drift: init: expected running as pid 5, found exited)"
    ]


def test_limit_drift_is_repaired() -> None:
    edited = (Drift("resources.memory_max", "268435456", "1073741824"),)
    desired, actual = _with_drift("no-change", edited)
    (action,) = plan(desired, actual).actions
    assert action.kind == "repair"
    assert action.to_json()["drift"] == [
        "resources.memory_max: expected 268435456, found 1073741824"
    ]
    assert action.steps == ("limits",)


@pytest.mark.parametrize(
    ("key", "value", "shown"),
    [
        ("memory_max", 64 * 1024**2, "64M"),
        ("memory_high", 1_000_000, "1000000"),
        ("cpu_max", 33.333, "33.333%"),
        ("cpu_max", 150.0, "150%"),
        ("pids_max", 50000, "50000"),
        ("io_weight", 100, "100"),
        ("pids_max", None, "unlimited"),
    ],
)
def test_a_limits_drift_shows_values_as_a_unit_writes_them(
    key: str, value: object, shown: str
) -> None:
    assert show_limit(key, value) == shown


@pytest.mark.parametrize(
    ("drift", "kind", "steps"),
    [
        (Drift("mount /www", "mounted", "missing"), "recreate", ()),
        (Drift("cgroup", "`x` present", "missing"), "recreate", ()),
        (Drift("network.veth", "link x", "missing"), "repair", ("network",)),
        (Drift("resources.pids_max", "20", "7"), "repair", ("limits",)),
    ],
)
def test_each_drift_is_planned_as_the_table_says(
    drift: Drift, kind: str, steps: tuple[str, ...]
) -> None:
    """What the plan shows is what apply does: drift that needs a new init is a recreate."""
    desired, actual = _with_drift("no-change", (drift,))
    (action,) = plan(desired, actual).actions
    assert (action.kind, action.reason, action.steps) == (kind, "drift", steps)
    if kind == "recreate":
        assert action.describe() == f"-/+ sandbox/web: recreate (drift: {drift})"
    else:
        assert action.describe() == f"! sandbox/web: {drift}"


def test_an_update_names_the_steps_that_apply_it() -> None:
    desired, actual = _with_drift("no-change", ())
    record = actual.records[("sandbox", "web")]
    unit = {**record.unit, "sandbox": {**record.unit["sandbox"], "description": "old"}}
    unit["resources"] = {**unit.get("resources", {}), "pids_max": 1}
    edited = record_of("sandbox", "web", unit, record.runtime)
    changed = actual._replace(records={**actual.records, record.key: edited})
    (action,) = [a for a in plan(desired, changed).actions if a.object == "sandbox/web"]
    assert action.kind == "update"
    assert action.steps == ("limits", "record")


def _changed(actual: ActualState, kind: str, name: str, table: str, **keys: object) -> ActualState:
    """`actual` with the record of KIND/NAME as if applied with KEYS of TABLE other than now."""
    record = actual.records[(kind, name)]
    unit = {**record.unit, table: {**record.unit.get(table, {}), **keys}}
    edited = record_of(kind, name, unit, record.runtime)
    return actual._replace(records={**actual.records, record.key: edited})


def test_a_change_shows_and_repairs_the_drift_found_with_it() -> None:
    """pids_max applied as 32 and set to 50000 by hand, the unit now says 100: the plan shows
    what it changes and what it found (#17: it showed `32 -> 100` alone)."""
    hand = Drift("resources.pids_max", "32", "50000")
    desired, actual = _with_drift("no-change", (hand,))
    actual = _changed(actual, "sandbox", "web", "resources", pids_max=32)
    (action,) = [a for a in plan(desired, actual).actions if a.object == "sandbox/web"]
    assert (action.kind, action.steps) == ("update", ("limits",))
    assert action.lines() == [
        "~ sandbox/web: update in place (resources.pids_max)",
        "    resources.pids_max: 32 -> 4096",
        "    drift: resources.pids_max: expected 32, found 50000",
    ]
    assert action.to_json()["drift"] == ["resources.pids_max: expected 32, found 50000"]


def test_a_change_with_drift_of_another_step_runs_both_steps() -> None:
    veth = Drift("network.veth", "link x", "missing")
    desired, actual = _with_drift("no-change", (veth,))
    actual = _changed(actual, "sandbox", "web", "sandbox", description="old")
    (action,) = [a for a in plan(desired, actual).actions if a.object == "sandbox/web"]
    assert (action.kind, action.steps) == ("update", ("network", "record"))


def test_a_change_with_drift_that_needs_a_new_init_is_a_recreate_showing_both() -> None:
    mount = Drift("mount /www", "mounted", "missing")
    desired, actual = _with_drift("no-change", (mount,))
    actual = _changed(actual, "sandbox", "web", "sandbox", description="old")
    (action,) = [a for a in plan(desired, actual).actions if a.object == "sandbox/web"]
    assert (action.kind, action.reason) == ("recreate", "drift")
    assert action.lines() == [
        f"-/+ sandbox/web: recreate (drift: {mount})",
        "    sandbox.description: old -> web",
    ]


def test_a_slice_change_with_drift_is_made_again_in_place() -> None:
    """A slice's drift is repaired by its idempotent create (ensure), which the update runs."""
    desired, actual = _with_drift("no-change", ())
    actual = _changed(actual, "slice", "services", "slice", memory_max=512 * 1024**2)
    gone: dict[tuple[str, str], tuple[Drift, ...]] = {
        ("slice", "services"): (Drift("cgroup", "`x` present", "missing"),)
    }
    actual = actual._replace(drift=gone)
    (action,) = [a for a in plan(desired, actual).actions if a.object == "slice/services"]
    assert (action.kind, action.steps) == ("update", ("ensure", "limits"))
    assert action.lines()[-1] == "    drift: cgroup: expected `x` present, found missing"


def test_target_keeps_the_object_and_what_it_stands_on() -> None:
    desired = read_units(str(CASES / "new-units" / "after"), TAG)
    whole = plan(desired, ActualState.empty())
    assert [a.object for a in targeted(whole, desired, "web").actions] == [
        "slice/services",
        "network/lan",
        "sandbox/web",
    ]
    assert [a.object for a in targeted(whole, desired, "job").actions] == [
        "slice/services",
        "slice/batch",
        "sandbox/job",
    ]
    assert [a.object for a in targeted(whole, desired, "network/lan").actions] == ["network/lan"]


def test_orphans_go_first_and_only_with_pruning() -> None:
    desired = read_units(str(CASES / "no-change" / "after"), TAG)
    records = {r.key: r for r in records_of(desired)}
    left = (
        Orphan("cgroup", "sandman-smt/ghost", "no record owns it"),
        Orphan("link", "smt-ghost", "a veth with no record"),
    )
    actual = ActualState(records=records, drift={}, orphans=left)
    assert [a.describe() for a in plan(desired, actual).actions] == [
        "- cgroup/sandman-smt/ghost: remove the orphan (no record owns it)",
        "- link/smt-ghost: remove the orphan (a veth with no record)",
    ]
    assert plan(desired, actual, prune=False).actions == ()
    (first, _) = plan(desired, actual).actions
    assert first.to_json()["reason"] == "orphan" and first.to_json()["action"] == "destroy"


def test_plan_colours_symbols_on_a_terminal_unless_no_color(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from sandman.commands import plan as plan_verb

    desired = read_units(str(CASES / "removed-objects" / "after"), TAG)
    result = plan(desired, actual_for(CASES / "removed-objects", {}))
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    monkeypatch.delenv("NO_COLOR", raising=False)
    coloured = plan_verb.render(result, "units")
    assert "\033[31m-\033[0m sandbox/job: destroy (unit removed)" in coloured
    monkeypatch.setenv("NO_COLOR", "1")
    assert "\033[" not in plan_verb.render(result, "units")


def test_a_create_lists_its_settings_and_an_automatic_address_resolved() -> None:
    desired = read_units(str(CASES / "new-units" / "after"), TAG)
    (web,) = [a for a in plan(desired, ActualState.empty()).actions if a.object == "sandbox/web"]
    shown = dict(line.strip().split(" = ", 1) for line in web.lines()[1:])
    assert shown["network.address"].startswith("auto (10.88.0.")
    assert shown["resources.memory_max"] == "256M"
    assert not [key for key in shown if key.startswith("resolved.")]


def test_a_target_that_is_neither_declared_nor_applied_is_refused() -> None:
    desired = read_units(str(CASES / "new-units" / "after"), TAG)
    whole = plan(desired, ActualState.empty())
    with pytest.raises(UsageError, match="--target wbe: no sandbox/wbe is declared"):
        targeted(whole, desired, "wbe")
    with pytest.raises(UsageError, match="no network/web"):
        targeted(whole, desired, "network/web")


def test_destroy_refuses_unknown_names_and_what_others_stand_on() -> None:
    desired = read_units(str(CASES / "new-units" / "after"), TAG)
    actual = ActualState(records={r.key: r for r in records_of(desired)}, drift={})
    lan, web = ("network", "lan"), ("sandbox", "web")
    assert destroy_problems(actual, {lan, web}, {lan, web}) == []
    (problem,) = destroy_problems(actual, {lan}, {lan})
    assert problem.startswith("network/lan: sandbox/web still use it")
    (problem,) = destroy_problems(actual, {("sandbox", "nope")}, {("sandbox", "nope")})
    assert problem == "sandbox/nope: nothing by that name is applied"
    services = ("slice", "services")
    assert any("slice/batch" in p for p in destroy_problems(actual, {services}, {services}))
    order = [a.object for a in destroy_plan(actual).actions]
    assert order.index("sandbox/web") < order.index("network/lan") < order.index("slice/services")
    assert order.index("slice/batch") < order.index("slice/services")


def test_only_the_models_size_keys_are_shown_as_sizes() -> None:
    from sandman.plan.actions import Change

    def shown(key: str, before: int | None, after: int | None) -> str:
        return Change(key, before, after, True).describe().split(": ", 1)[1]

    assert shown("slice.memory_high", None, 1024**3) == "(unset) -> 1G"
    assert shown("resources.memory_max", 3 * 1024**2, 1000) == "3M -> 1000"
    # Counts, weights and the shm size (which may be "max") are shown as written.
    assert shown("resources.pids_max", 1024, 2048) == "1024 -> 2048"
    assert shown("resources.shm_size", 1024, None) == "1024 -> (unset)"


def test_a_stop_signal_change_is_an_update_of_the_record(tmp_path: pathlib.Path) -> None:
    """Nothing running changes: a stop reads the signal from the record."""
    unit = '[sandbox]\ncommand = ["/bin/httpd", "-f"]\n'
    (tmp_path / "before").mkdir()
    (tmp_path / "before" / "web.sandbox.toml").write_text(unit)
    (tmp_path / "after").mkdir()
    (tmp_path / "after" / "web.sandbox.toml").write_text(unit + 'stop_signal = "SIGRTMIN+3"\n')
    records = records_of(read_units(str(tmp_path / "before"), TAG))
    actual = ActualState(records={r.key: r for r in records}, drift={})
    (action,) = plan(read_units(str(tmp_path / "after"), TAG), actual).actions
    assert (action.kind, action.steps) == ("update", ("record",))
    assert [(c.key, c.before, c.after, c.live) for c in action.changes] == [
        ("sandbox.stop_signal", None, "SIGRTMIN+3", True)
    ]


def test_a_record_from_before_stop_signal_plans_nothing() -> None:
    """A sandbox applied before the key existed has no stop_signal in its record: no change."""
    desired = read_units(str(CASES / "no-change" / "after"), TAG)
    records = []
    for record in records_of(desired):
        unit = {**record.unit, "sandbox": dict(record.unit.get("sandbox") or {})}
        if record.kind == "sandbox":
            unit["sandbox"].pop("stop_signal")
        records.append(record._replace(unit=unit, digest=digest(unit)))
    assert any(r.digest != d.digest for r, d in zip(records, records_of(desired), strict=True))
    actual = ActualState(records={r.key: r for r in records}, drift={})
    assert plan(desired, actual).actions == ()
