"""The compiled unit validators (units/compiled.py) and the plain classes they make (plain.py):
the same answers as the models, a kept schema that names only parsers, and a load of new
units without pydantic. (test_property.py holds the models and the compiled validators to
the same answers on random documents.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sandman.units import cache, compiled, model, plain, plain_gen
from sandman.units.plain_base import Plain

REPO = Path(__file__).resolve().parents[2]
FULL = {
    "sandbox": {"command": ["/bin/true"], "boot": True, "environment": {"A": "b"}},
    "mount": [
        {"type": "tmpfs", "target": "/t", "mode": "1777", "size": "16M"},
        {"type": "bind", "source": "/a", "target": "/b", "read_only": True},
        {"type": "overlay", "target": "/o", "lower": ["/l"]},
        {"type": "proc", "target": "/p"},
    ],
    "resources": {"cpu_max": "50%", "shm_size": "1G", "pids_max": "max", "memory_max": "64M"},
    "network": {"attach": "n", "address6": "auto", "ports": [{"host": 80, "sandbox": 8080}]},
    "time": {"monotonic_offset": "-10s"},
    "idmap": {"uid": [{"inside": 0, "outside": 100000, "count": 65536}]},
    "security": {"capabilities": ["CAP_NET_ADMIN"], "syscalls_deny": ["io_uring_setup"]},
}


@pytest.fixture(autouse=True)
def fresh_compiled() -> Any:
    """Every test builds or loads the schemas as a new run would, and leaves no kept dir set."""
    compiled._compiled.cache_clear()
    compiled._kept.clear()
    yield
    compiled._compiled.cache_clear()
    compiled._kept.clear()


def test_plain_py_is_what_the_models_render() -> None:
    """plain.py is generated: a model edited without `python -m sandman.units.plain_gen` fails."""
    assert Path(plain_gen.path()).read_text(encoding="utf-8") == plain_gen.render()


def test_every_model_has_its_plain_twin_with_its_fields() -> None:
    for cls in plain_gen.model_classes():
        twin = getattr(plain, cls.__name__)
        assert issubclass(twin, Plain)
        made = twin.model_validate(_minimal(cls.__name__))
        assert tuple(made.__dict__) == tuple(cls.model_fields)
        assert made == compiled.to_plain(cls.model_validate(_minimal(cls.__name__)))


def _minimal(name: str) -> dict[str, Any]:
    required: dict[str, dict[str, Any]] = {
        "SandboxSection": {"command": ["/bin/true"]},
        "SandboxUnit": {"sandbox": {"command": ["/bin/true"]}},
        "IdRange": {"inside": 0, "outside": 1, "count": 1},
        "BindMount": {"type": "bind", "source": "/a", "target": "/b"},
        "TmpfsMount": {"type": "tmpfs", "target": "/t"},
        "ProcMount": {"type": "proc", "target": "/p"},
        "OverlayMount": {"type": "overlay", "target": "/o", "lower": ["/l"]},
        "PortForward": {"host": 1, "sandbox": 2},
        "SandboxNetwork": {"attach": "n"},
        "NetworkSection": {"subnet": "10.0.0.0/24"},
        "NetworkUnit": {"network": {"subnet": "10.0.0.0/24"}},
        "SliceUnit": {"slice": {}},
    }
    return required.get(name, {})


@pytest.mark.parametrize("kept", [False, True], ids=["built", "kept"])
def test_a_full_unit_is_the_models_unit(kept: bool, tmp_path: Path) -> None:
    """Every kind of key, through schemas built in memory and through a kept file: values,
    dumps (with their serializers: sizes, durations, shares, modes), the keys given."""
    if kept:  # a first run keeps the schemas, the next loads them
        compiled.keep_in(str(tmp_path / "cache"))
        plain.SandboxUnit.model_validate({"sandbox": {"command": ["/x"]}})
        compiled._compiled.cache_clear()
        (kept_file,) = (tmp_path / "cache").iterdir()
        assert kept_file.name.startswith("schemas-")
    made = plain.SandboxUnit.model_validate(FULL)
    expected = model.SandboxUnit.model_validate(FULL)
    assert made == compiled.to_plain(expected)
    for mode in ("json", "python"):
        for unset in (False, True):
            dumped = made.model_dump(mode=mode, exclude_unset=unset)
            assert repr(dumped) == repr(expected.model_dump(mode=mode, exclude_unset=unset))
    # boot = true sets its defaults as if written (parsers.boot_defaults)
    assert made.sandbox.model_fields_set == {"command", "boot", "environment", "stop_signal"}
    assert made.security.capabilities == ("CAP_NET_ADMIN",)
    assert made.resources.shm_bytes() == 1024**3


def test_a_refusal_carries_the_models_errors() -> None:
    bad = {"sandbox": {"command": []}, "resources": {"cpu_weight": 0}, "nope": 1}
    with pytest.raises(compiled.InvalidUnitError) as caught:
        plain.SandboxUnit.model_validate(bad)
    from pydantic import ValidationError

    with pytest.raises(ValidationError) as expected:
        model.SandboxUnit.model_validate(bad)
    assert len(caught.value.errors) == 3
    assert [(e["type"], e["loc"], e["msg"]) for e in caught.value.errors] == [
        (e["type"], e["loc"], e["msg"]) for e in expected.value.errors()
    ]


def test_plain_values_are_immutable_and_compare_by_value() -> None:
    one = plain.PortForward(host=80, sandbox=8080)
    assert one == plain.PortForward(host=80, sandbox=8080) != plain.PortForward(host=81, sandbox=1)
    assert hash(one) == hash(plain.PortForward(host=80, sandbox=8080))
    with pytest.raises(AttributeError):
        one.host = 81
    moved = one.model_copy(update={"host": 81})
    assert (moved.host, one.host, moved.model_fields_set) == (81, 80, {"host", "sandbox"})
    with pytest.raises(compiled.InvalidUnitError):
        plain.PortForward(host=0, sandbox=1)


def _kept_file(directory: Path) -> Path:
    compiled.keep_in(str(directory))
    plain.SliceUnit.model_validate({"slice": {}})
    compiled._compiled.cache_clear()
    (found,) = directory.iterdir()
    return found


def test_the_kept_schemas_are_private_and_named_by_the_code(tmp_path: Path) -> None:
    kept = _kept_file(tmp_path / "cache")
    assert oct(kept.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "cache").stat().st_mode & 0o777) == "0o700"
    assert cache.code_hash()[:8] in kept.name


@pytest.mark.parametrize(
    "name",
    [
        "os:system",
        "builtins:exec",
        "builtins:eval",
        "sandman.units.scalars:re",
        "sandman.units.parsers:difflib",
        "sandman.units.parsers:scalars",
        "sandman.units.scalars:signal_name",
        "subprocess:run",
    ],
)
def test_a_forged_kept_schema_calls_nothing_it_names(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A kept file that names anything but a parser defined in the allowed modules is refused
    as a whole, and the schemas are built again from the models (and kept afresh)."""
    kept = _kept_file(tmp_path / "cache")
    calls: list[Any] = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a))
    schemas = json.loads(kept.read_text())
    field = schemas["SliceUnit"]["schema"]["fields"]["slice"]
    field["schema"] = {
        "type": "function-before",
        "function": {"type": "no-info", "function": {"$name": name}},
        "schema": field["schema"],
    }
    kept.write_text(json.dumps(schemas))
    made = plain.SliceUnit.model_validate({"slice": {"parent": "web"}})
    assert calls == []
    assert made.slice.parent == "web"
    assert name not in kept.read_text()  # built again and kept in its place


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: s["SliceUnit"].update(type="no-such-schema"),  # pydantic-core refuses it
        lambda s: s.pop("SliceUnit"),  # a class missing
    ],
    ids=["refused", "missing"],
)
def test_a_kept_file_this_pydantic_core_cannot_take_falls_back_to_the_models(
    damage: Any, tmp_path: Path
) -> None:
    kept = _kept_file(tmp_path / "cache")
    schemas = json.loads(kept.read_text())
    damage(schemas)
    kept.write_text(json.dumps(schemas))
    assert plain.SliceUnit.model_validate({"slice": {"parent": "web"}}).slice.parent == "web"
    with pytest.raises(compiled.InvalidUnitError):
        plain.SliceUnit.model_validate({"slice": {"parent": "Not A Name"}})


def test_schemas_of_another_release_are_removed_when_new_ones_are_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kept = _kept_file(tmp_path / "cache")
    unit_cache = tmp_path / "cache" / "units-0123.cache"
    unit_cache.write_text("{}")
    monkeypatch.setattr(cache, "code_hash", lambda: "another release")
    newer = _kept_file_after(tmp_path / "cache", kept)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [newer, unit_cache.name]


def _kept_file_after(directory: Path, before: Path) -> str:
    plain.SliceUnit.model_validate({"slice": {}})
    compiled._compiled.cache_clear()
    (found,) = [p.name for p in directory.glob("schemas-*") if p != before]
    return found


def test_a_kept_file_of_another_user_or_open_to_others_is_not_read(tmp_path: Path) -> None:
    kept = _kept_file(tmp_path / "cache")
    kept.write_text("{not json")  # were it read, the load would fail over to a build anyway
    kept.chmod(0o644)
    assert cache.read_private(str(tmp_path / "cache"), kept.name) is None
    kept.chmod(0o600)
    assert cache.read_private(str(tmp_path / "cache"), kept.name) == b"{not json"


def test_new_units_load_without_pydantic_once_the_schemas_are_kept(tmp_path: Path) -> None:
    """validate of a unit never seen before (the unit cache cannot answer), in a new process:
    the first run keeps the schemas, the second imports neither pydantic nor its package."""
    units, state = tmp_path / "units", tmp_path / "state"
    units.mkdir()
    state.mkdir(mode=0o700)
    script = (
        "import sys\n"
        "from sandman.cli import main\n"
        "code = main(['validate', sys.argv[1], '--state-dir', sys.argv[2]])\n"
        "top = ('pydantic', 'pydantic_core')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in top))\n"
        "sys.exit(code)\n"
    )
    imported = []
    for number in (1, 2):
        (units / f"u{number}.sandbox.toml").write_text('[sandbox]\ncommand = ["/bin/true"]\n')
        run = subprocess.run(
            [sys.executable, "-c", script, str(units), str(state)],
            capture_output=True,
            text=True,
            cwd=REPO,
            check=True,
        )
        imported.append(run.stdout.strip().splitlines()[-1])
    assert "'pydantic'" in imported[0]
    # pydantic-core's extension alone (it names an empty pydantic.plugin._loader of its own)
    assert "'pydantic_core._pydantic_core'" in imported[1]
    assert "'pydantic'" not in imported[1] and "'pydantic_core'" not in imported[1]
