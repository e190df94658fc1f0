"""Writes plain.py, the unit models' values as plain classes, from the models (model.py).

    .venv/bin/python -m sandman.units.plain_gen          # rewrite sandman/units/plain.py

Each model class becomes a Plain class of the same name, bases and fields (annotations with
pydantic's metadata taken off), and the same public methods, copied from the model's source.
The test suite renders it again and fails when plain.py is not what the models give, so the
models stay the one source of truth.
"""

from __future__ import annotations

import inspect
import json
import os
import textwrap
import types
import typing
from typing import Any

from pydantic import BaseModel

from sandman.units import model

_HEADER = '''"""The unit models' values as plain classes: what the loader hands on, made by the
compiled validators (compiled.py) without pydantic. GENERATED from model.py by
`python -m sandman.units.plain_gen`: edit the models, never this file (a test compares).
"""

from __future__ import annotations

from typing import Literal

from sandman.units import parsers
from sandman.units.plain_base import Plain
'''


def model_classes() -> list[type[BaseModel]]:
    """Every model of model.py, in the order of their definitions (a base before its subclasses:
    a module's namespace keeps the order its names were bound in)."""
    return [
        value
        for value in vars(model).values()
        if isinstance(value, type)
        and issubclass(value, model.Section)
        and value is not model.Section
    ]


def render() -> str:
    parts = [_HEADER]
    for cls in model_classes():
        parts.append(_render_class(cls))
    units = "".join(f'    "{kind}": {cls.__name__},\n' for kind, cls in model.MODELS.items())
    sizes = ", ".join(f'"{name}"' for name in sorted(model.size_fields()))
    parts.append(
        "# The unit of each kind.\n"
        "UNITS: dict[str, type[SandboxUnit] | type[NetworkUnit] | type[SliceUnit]] = {\n"
        f"{units}}}\n"
        "# The keys that hold a size in bytes (model.size_fields): a plan shows them as sizes.\n"
        f"SIZE_FIELDS = frozenset({{{sizes}}})\n"
    )
    return "\n\n".join(parts)


def _render_class(cls: type[BaseModel]) -> str:
    base = cls.__bases__[0]
    base_name = "Plain" if base is model.Section else base.__name__
    lines = [f"class {cls.__name__}({base_name}):"]
    if cls.__doc__ and cls.__doc__ != base.__doc__:
        lines.append(f'    """{cls.__doc__}"""\n')
    inherited = getattr(base, "model_fields", {})
    for name, field in cls.model_fields.items():
        if name in inherited and inherited[name].annotation == field.annotation:
            continue
        lines.append(f"    {name}: {annotation_text(field.annotation)}")
    for name, value in vars(cls).items():
        if inspect.isfunction(value) and not name.startswith("_"):
            source = textwrap.dedent(inspect.getsource(value))
            lines.append("")
            lines.extend("    " + line if line else line for line in source.rstrip().split("\n"))
    if len(lines) == 1:
        lines.append("    pass")
    return "\n".join(lines) + "\n"


def annotation_text(annotation: Any) -> str:
    """A type as a plain class holds it: pydantic's metadata off, models by their names."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return annotation_text(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(annotation_text(arg) for arg in args)
    if origin is typing.Literal:
        # double quotes, as the formatter writes them
        return f"Literal[{', '.join(json.dumps(arg) for arg in args)}]"
    if origin in (tuple, dict):
        inner = ", ".join("..." if arg is Ellipsis else annotation_text(arg) for arg in args)
        return f"{origin.__name__}[{inner}]"
    if annotation is type(None):
        return "None"
    if isinstance(annotation, type):
        return annotation.__name__
    raise ValueError(f"no plain form for the annotation {annotation!r}")


def path() -> str:
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "plain.py")


def main() -> None:
    with open(path(), "w", encoding="utf-8") as handle:
        handle.write(render())


if __name__ == "__main__":
    main()
