"""Turn pydantic's validation errors into messages that say what is wrong and how to fix it."""

from __future__ import annotations

import difflib
import types
import typing
from typing import Any

from pydantic import BaseModel

from sandman.units.locate import Path
from sandman.units.values import type_name

_EXPECTED = {
    "int_type": "an integer",
    "int_parsing": "an integer",
    "int_from_float": "an integer",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
    "tuple_type": "an array",
    "list_type": "an array",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "float_type": "a number",
}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The model classes an annotation can hold, through Optional, Annotated, tuple and unions."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (tuple, list, dict, typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found.extend(_models_in(arg))
    return found


def _model_at(root: type[BaseModel], loc: Path) -> type[BaseModel] | None:
    """The model class that holds the last key of `loc`, following pydantic's error locations."""
    candidates = [root]
    for part in loc:
        if isinstance(part, int):
            continue
        tagged = [m for m in candidates if _type_tag(m) == part]
        if tagged:
            candidates = tagged
            continue
        holders = [m for m in candidates if part in m.model_fields]
        if not holders:
            return None
        annotation = holders[0].model_fields[part].annotation
        candidates = _models_in(annotation)
        if not candidates:
            return None
    return candidates[0] if len(candidates) == 1 else None


def _type_tag(model: type[BaseModel]) -> str | None:
    field = model.model_fields.get("type")
    if field is None:
        return None
    args = typing.get_args(field.annotation)
    return str(args[0]) if len(args) == 1 else None


def strip_tags(root: type[BaseModel], loc: Path) -> Path:
    """Drop the discriminator tags pydantic puts in locations (`mount[0].bind.source`)."""
    path: list[str | int] = []
    candidates = [root]
    for part in loc:
        if isinstance(part, str) and any(_type_tag(m) == part for m in candidates):
            candidates = [m for m in candidates if _type_tag(m) == part]
            continue
        path.append(part)
        if isinstance(part, str):
            holders = [m for m in candidates if part in m.model_fields]
            candidates = _models_in(holders[0].model_fields[part].annotation) if holders else []
    return tuple(path)


def describe(root: type[BaseModel], error: Any) -> tuple[str, str]:
    """(message, hint) for one pydantic error dict."""
    kind: str = error["type"]
    value = error.get("input")
    loc: Path = tuple(error["loc"])
    if kind == "extra_forbidden":
        return _unknown_key(root, loc)
    if kind == "missing":
        return "is missing", "this key is required"
    if kind in _EXPECTED:
        return f"{_shown(value)} is not {_EXPECTED[kind]}", f"write {_EXPECTED[kind]}"
    if kind == "value_error":
        message = str(error["msg"]).removeprefix("Value error, ")
        text, _, hint = message.partition("; ")
        return text, hint
    if kind == "literal_error":
        allowed = str(error.get("ctx", {}).get("expected", ""))
        return f"{_shown(value)} is not allowed", f"use one of {allowed}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return f"{_shown(value)} is out of range", str(error["msg"]).replace(
            "Input should be", "it must be"
        )
    if kind in ("too_short", "too_long"):
        return "has the wrong length", str(error["msg"]).replace("Tuple should", "it must")
    if kind == "union_tag_invalid":
        tags = error.get("ctx", {}).get("expected_tags", "")
        return f"{error.get('ctx', {}).get('tag')!r} is not a mount type", f"use one of {tags}"
    if kind == "union_tag_not_found":
        return "has no `type`", 'add type = "bind", "tmpfs", "proc" or "overlay"'
    return str(error["msg"]), ""


def _unknown_key(root: type[BaseModel], loc: Path) -> tuple[str, str]:
    key = str(loc[-1])
    holder = _model_at(root, loc[:-1])
    if holder is None:
        return "is not a known key", "remove it"
    known = sorted(holder.model_fields)
    close = difflib.get_close_matches(key, known, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return "is not a known key", f"{guess}valid keys here: {', '.join(known)}"


def _shown(value: object) -> str:
    if isinstance(value, dict | list | tuple):
        return type_name(value)
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
