"""Turn pydantic's validation errors into messages that say what is wrong and how to fix it."""

from __future__ import annotations

import datetime
import types
import typing
from typing import Any

from pydantic import BaseModel

from sandman.units.constants import KINDS
from sandman.units.locate import Path
from sandman.units.scalars import type_name

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


def problem_path(root: type[BaseModel], error: Any) -> Path:
    """The key a pydantic error is about, as the user wrote it."""
    path = strip_tags(root, tuple(error["loc"]))
    # A bad dict key is reported at `environment.KEY.[key]`; the user wrote `environment.KEY`.
    if path[-1:] == ("[key]",):
        path = path[:-1]
    # A bad or missing mount type is reported at the mount; the key to fix is its `type`.
    if error["type"] in ("union_tag_invalid", "union_tag_not_found"):
        path = (*path, "type")
    return path


def describe(root: type[BaseModel], error: Any) -> tuple[str, str]:
    """(message, hint) for one pydantic error dict."""
    kind: str = error["type"]
    value = error.get("input")
    loc: Path = tuple(error["loc"])
    if kind == "extra_forbidden":
        return _unknown_key(root, loc)
    if kind == "missing":
        return "is missing", _missing_hint(root, loc)
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
        return _length(error.get("ctx", {}))
    if kind == "union_tag_invalid":
        tags = error.get("ctx", {}).get("expected_tags", "")
        return f"{error.get('ctx', {}).get('tag')!r} is not a mount type", f"use one of {tags}"
    if kind == "union_tag_not_found":
        return "is missing", 'add type = "bind", "tmpfs", "proc" or "overlay"'
    return str(error["msg"]), ""


def _missing_hint(root: type[BaseModel], loc: Path) -> str:
    holder = _model_at(root, loc[:-1])
    field = holder.model_fields.get(str(loc[-1])) if holder is not None else None
    if len(loc) == 1 and field is not None and _models_in(field.annotation):
        return f"add a [{loc[0]}] table; it is required"
    return "this key is required"


def _length(ctx: dict[str, Any]) -> tuple[str, str]:
    actual = ctx.get("actual_length")
    message = "is empty" if actual == 0 else f"has {actual} items"
    if "min_length" in ctx:
        return message, f"give at least {_items(ctx['min_length'])}"
    return message, f"give at most {_items(ctx.get('max_length'))}"


def _items(count: object) -> str:
    return f"{count} item" if count == 1 else f"{count} items"


def _unknown_key(root: type[BaseModel], loc: Path) -> tuple[str, str]:
    key = str(loc[-1])
    holder = _model_at(root, loc[:-1])
    if holder is None:
        return "is not a known key", "remove it"
    known = sorted(holder.model_fields)
    if len(loc) == 1 and key in KINDS:
        # `[sandbox]` in lan.network.toml: the file's name, not its content, sets its kind.
        return "is not a known key", (
            f"[{key}] belongs in a NAME.{key}.toml file; this one takes "
            f"{', '.join(f'[{k}]' for k in known)}"
        )
    import difflib  # only on the error path

    close = difflib.get_close_matches(key, known, n=1)
    guess = f"did you mean {close[0]!r}? " if close else ""
    return "is not a known key", f"{guess}valid keys here: {', '.join(known)}"


def _shown(value: object) -> str:
    """A value as TOML spells it (`true`, `1979-05-27`), not as Python does (`True`)."""
    if isinstance(value, dict | list | tuple):
        return type_name(value)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
