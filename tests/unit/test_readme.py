"""The README's unit-key tables cover every key of the models, and their change column is the
planner's own table: documentation that drifts from the code fails here."""

from __future__ import annotations

import pathlib
import re
import typing

import pytest
from pydantic import BaseModel

from sandman.plan.keys import is_live
from sandman.units.constants import KINDS
from sandman.units.model import MODELS

README = (pathlib.Path(__file__).resolve().parents[2] / "README.md").read_text()
_ROW = re.compile(r"^\| `([^`]+)` \|[^|]*\|[^|]*\| (live|recreate) \|", re.MULTILINE)


def _documented(kind: str) -> dict[str, str]:
    section = README.split(f"### `NAME.{kind}.toml`", 1)[1].split("\n### ", 1)[0]
    return dict(_ROW.findall(section))


def _models(annotation: object) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def _is_array(annotation: object) -> bool:
    if typing.get_origin(annotation) is tuple:
        return True
    return any(_is_array(arg) for arg in typing.get_args(annotation))


def _keys(model: type[BaseModel], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, field in model.model_fields.items():
        inner = _models(field.annotation)
        path = f"{prefix}{name}"
        if not inner:
            keys.add(path)
            continue
        array = "[]" if _is_array(field.annotation) else ""
        for sub in inner:
            keys |= _keys(sub, f"{path}{array}.")
    return keys


@pytest.mark.parametrize("kind", KINDS)
def test_every_key_is_documented(kind: str) -> None:
    assert _keys(MODELS[kind]) == set(_documented(kind))


@pytest.mark.parametrize("kind", KINDS)
def test_change_column_matches_planner(kind: str) -> None:
    for key, change in _documented(kind).items():
        # An array changes as a whole: `network.ports[].host` is planned as `network.ports`.
        planned = key.split("[]")[0]
        if key == "sandbox.environment":
            planned = "sandbox.environment.NAME"
        assert is_live(kind, planned) == (change == "live"), key


def test_every_verb_has_a_row_in_the_command_line_table() -> None:
    """The verbs are read off the parser, as the completion scripts and man pages are."""
    from sandman.cli_spec import command_line

    table = README.split("## Command line", 1)[1].split("\n### ", 1)[0]
    rows = re.findall(r"^\| `sandman ([a-z-]+)[ `]", table, re.MULTILINE)
    # A second name of a verb (`stats` for `top`) is named in that verb's row.
    rows += re.findall(r"\(also `sandman ([a-z-]+)`\)", table)
    assert sorted(set(rows)) == sorted(verb.path[0] for verb in command_line().subcommands)
