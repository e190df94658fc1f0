"""Where an instance's cgroups live: its own tree, or a systemd scope on a pure v2 systemd host."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandman import placement
from sandman.kernel import scope
from sandman.units import scalars


def test_without_systemd_an_instance_keeps_its_own_tree(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement, "systemd_scoped", lambda: False)
    assert placement.cgroup_base("sm") == "sandman"
    assert placement.cgroup_base("s1a") == "sandman-s1a"
    assert not placement.in_scope(placement.cgroup_base("sm"))


def test_under_systemd_each_instance_has_its_scope_in_machine_slice(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(placement, "systemd_scoped", lambda: True)
    assert placement.cgroup_base("sm") == "machine.slice/sandman.scope"
    assert placement.cgroup_base("s1a") == "machine.slice/sandman-s1a.scope"
    assert placement.in_scope(placement.cgroup_base("s1a"))


def test_systemd_scopes_need_pure_v2(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(placement, "systemd_booted", lambda: True)
    monkeypatch.setattr(placement, "_PURE_V2", "/nonexistent/cgroup.controllers")
    assert not placement.systemd_scoped()


def test_the_holder_leaf_can_never_be_a_unit_s_name() -> None:
    assert not scalars.NAME_RE.fullmatch(scope.HOLDER)


def test_only_placement_turns_a_tag_into_a_cgroup_base() -> None:
    """Every module that needs the instance's cgroups asks placement.cgroup_base: one that took
    names.cgroup_root instead would look for them in the wrong tree on a systemd host (status's
    pressure did, after a merge, and failed there only)."""
    package = Path(placement.__file__).parent
    callers = sorted(
        str(path.relative_to(package))
        for path in package.rglob("*.py")
        if "cgroup_root(" in path.read_text() and path.name not in ("placement.py", "names.py")
    )
    assert callers == []
