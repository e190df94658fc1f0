"""The committed JSON Schemas are what the models generate, and the shipped units satisfy them."""

from __future__ import annotations

import json
import pathlib
import tomllib

import jsonschema
import pytest

from sandman.cli import main
from sandman.units.constants import KINDS
from sandman.units.schema import schema_for, unit_schema

REPO = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("kind", KINDS)
def test_committed_schema_is_current(kind: str) -> None:
    committed = json.loads((REPO / "schemas" / f"{kind}.schema.json").read_text())
    fix = f"sandman schema {kind} > schemas/{kind}.schema.json"
    assert committed == schema_for(kind), f"schemas/{kind}.schema.json is stale; run: {fix}"


@pytest.mark.parametrize("kind", KINDS)
def test_schema_is_valid_json_schema(kind: str) -> None:
    jsonschema.Draft202012Validator.check_schema(schema_for(kind))


def _shipped_units() -> list[pathlib.Path]:
    return sorted((REPO / "units").rglob("*.toml"))  # units/debian/ too


@pytest.mark.parametrize("path", _shipped_units(), ids=lambda p: p.name)
def test_shipped_units_satisfy_schema(path: pathlib.Path) -> None:
    kind = path.name.split(".")[1]
    document = tomllib.loads(path.read_text())
    jsonschema.validate(document, schema_for(kind), cls=jsonschema.Draft202012Validator)


def test_schema_rejects_unknown_key() -> None:
    document = {"sandbox": {"command": ["/bin/true"], "comand": ["x"]}}
    with pytest.raises(jsonschema.ValidationError, match="comand"):
        jsonschema.validate(document, schema_for("sandbox"))


def test_schema_verb_prints_one_kind(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["schema", "network"]) == 0
    assert json.loads(capsys.readouterr().out) == schema_for("network")


def test_schema_verb_without_kind_prints_one_schema_for_any_unit(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """One schema an editor can use for every unit file (#17), not a map of three."""
    assert main(["schema"]) == 0
    combined = json.loads(capsys.readouterr().out)
    assert combined == unit_schema()
    jsonschema.Draft202012Validator.check_schema(combined)
    for path in sorted((REPO / "units").rglob("*.toml")):
        jsonschema.validate(tomllib.loads(path.read_text()), combined)
    for wrong in (
        {"sandbox": {"comand": ["x"]}},
        {"network": {"subnet": "10.0.0.0/24"}, "slice": {}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(wrong, combined)


def test_committed_unit_schema_is_current() -> None:
    committed = json.loads((REPO / "schemas" / "unit.schema.json").read_text())
    fix = "sandman schema > schemas/unit.schema.json"
    assert committed == unit_schema(), f"schemas/unit.schema.json is stale; run: {fix}"
