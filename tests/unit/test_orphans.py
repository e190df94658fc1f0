"""Which objects are orphans: the pure decisions of observe/orphans.py, without a kernel."""

from __future__ import annotations

import io
import pathlib
from dataclasses import dataclass

from sandman.kernel.scope import HOLDER
from sandman.observe.facts import Record
from sandman.observe.orphans import (
    cgroup_orphans,
    link_orphans,
    mount_orphans,
    owned_cgroups,
    path_orphans,
    rule_orphans,
)
from sandman.observe.records import record_of, runtime_of
from sandman.progress import Lines

TAG = "s1a"
BASE = "sandman-s1a"


def record(
    kind: str, name: str, unit: dict[str, object] | None = None, **runtime: object
) -> Record:
    return record_of(kind, name, unit or {}, runtime_of(runtime))


def tree(*paths: str) -> dict[str, list[str]]:
    """rel -> its children, for the given cgroup paths and their ancestors."""
    children: dict[str, set[str]] = {}
    for path in paths:
        parts = path.split("/")
        for depth in range(1, len(parts) + 1):
            children.setdefault("/".join(parts[:depth]), set())
            if depth > 1:
                children["/".join(parts[: depth - 1])].add(parts[depth - 1])
    return {rel: sorted(names) for rel, names in children.items()}


def cgroups(records: list[Record], *paths: str) -> list[str]:
    existing = tree(*paths)
    found = cgroup_orphans(BASE, owned_cgroups(records), existing.get)
    return sorted(o.name for o in found)


def test_cgroups_of_records_and_their_slices_are_owned() -> None:
    records = [
        record("slice", "tier", cgroup=f"{BASE}/tier"),
        record("sandbox", "web", cgroup=f"{BASE}/tier/web"),
        record("sandbox", "db", cgroup=f"{BASE}/db"),
    ]
    assert cgroups(records, f"{BASE}/tier/web", f"{BASE}/db") == []


def test_a_cgroup_no_record_owns_is_an_orphan_even_inside_a_slice() -> None:
    records = [record("slice", "tier", cgroup=f"{BASE}/tier")]
    found = cgroups(records, f"{BASE}/tier/web/inner", f"{BASE}/ghost/deeper")
    assert found == [f"{BASE}/ghost", f"{BASE}/tier/web"]


def test_below_a_sandbox_cgroup_is_the_sandbox_s_business() -> None:
    records = [record("sandbox", "web", cgroup=f"{BASE}/web")]
    assert cgroups(records, f"{BASE}/web/made-inside") == []


def test_with_no_record_the_instance_cgroup_itself_is_the_orphan() -> None:
    assert cgroups([], f"{BASE}/ghost") == [BASE]
    assert cgroups([]) == []  # and nothing when it does not exist


def test_the_leaf_of_a_systemd_scope_s_holder_is_no_orphan() -> None:
    records = [record("sandbox", "web", cgroup=f"{BASE}/web")]
    assert cgroups(records, f"{BASE}/web", f"{BASE}/{HOLDER}") == []


def test_rules_of_objects_with_no_record_are_orphans() -> None:
    @dataclass
    class Rule:
        kind: str
        owner: str

    records = [record("network", "lan"), record("sandbox", "web")]
    rules = [Rule("base", "guard"), Rule("nat", "lan"), Rule("nat", "old"), Rule("port", "web")]
    rules += [Rule("port", "gone"), Rule("port", "gone")]
    rules += [Rule("forward", "lan"), Rule("forward", "old"), Rule("antispoof", "web")]
    rules += [Rule("antispoof", "gone"), Rule("", "")]
    found = rule_orphans(TAG, records, rules)
    names = ["antispoof gone", "forward old", "nat old", "port gone"]
    assert sorted(o.name for o in found) == names
    # No network recorded: the whole table goes.
    (table,) = rule_orphans(TAG, [record("sandbox", "web")], rules)
    assert (table.kind, table.name) == ("table", f"sandman_{TAG}")
    assert rule_orphans(TAG, [], []) == []


def test_links_named_like_the_instance_with_no_record_are_orphans() -> None:
    @dataclass
    class Link:
        kind: str | None

    records = [
        record("network", "lan", {"resolved": {"bridge": f"{TAG}b-lan"}}, bridge=f"{TAG}b-lan"),
        record("sandbox", "web", {"resolved": {"veth": f"{TAG}-web"}}),
    ]
    links = {
        f"{TAG}b-lan": Link("bridge"),
        f"{TAG}-web": Link("veth"),
        f"{TAG}-ghost": Link("veth"),
        f"{TAG}b-old": Link("bridge"),
        f"{TAG}-phys": Link(None),  # not a kind sandman makes: never touched
        f"{TAG}x-other": Link("veth"),  # another naming: not this instance's
        "eth0": Link(None),
    }
    found = link_orphans(TAG, records, links)
    assert sorted(o.name for o in found) == [f"{TAG}-ghost", f"{TAG}b-old"]


def test_runtime_dirs_and_unfinished_records_are_orphans(tmp_path: pathlib.Path) -> None:
    (tmp_path / "sandboxes" / "web").mkdir(parents=True)
    (tmp_path / "sandboxes" / "ghost").mkdir()
    (tmp_path / "sandboxes" / "web.json").write_text("{}")
    (tmp_path / "networks").mkdir()
    (tmp_path / "networks" / "lan.json.tmp").write_text("{")
    found = path_orphans(str(tmp_path), [record("sandbox", "web")])
    assert sorted(o.name for o in found) == ["networks/lan.json.tmp", "sandboxes/ghost"]


def test_mounts_under_the_state_dir_are_orphans_deepest_first() -> None:
    points = ["/", "/run/sandman-x", "/run/sandman/sandboxes/a", "/run/sandman/sandboxes/a/b"]
    found = mount_orphans("/run/sandman", points)
    assert [o.name for o in found] == ["sandboxes/a/b", "sandboxes/a"]


def test_progress_keeps_a_status_line_on_a_terminal_for_many_actions() -> None:
    stream = io.StringIO()
    lines = Lines(stream, status=True)
    lines.begin(6)
    lines.start("+ sandbox/a: create")
    lines.done("+ sandbox/a: create", 0.01)
    lines.start("+ sandbox/b: create")
    text = stream.getvalue()
    assert "[1/6] + sandbox/a: create" in text
    assert "\r\033[K+ sandbox/a: create: done in 10 ms\n" in text
    assert text.endswith("[2/6] + sandbox/b: create")
    few = io.StringIO()
    quiet = Lines(few, status=True)
    quiet.begin(2)
    quiet.start("+ sandbox/a: create")
    assert few.getvalue() == "+ sandbox/a: create ...\n"
