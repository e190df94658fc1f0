"""JSON Schemas of the unit kinds, generated from the models (the one source of truth)."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from sandman.units.constants import KINDS
from sandman.units.model import MODELS


class _TomlSchema(GenerateJsonSchema):
    """TOML has no null: an optional key is one that may be left out, so drop the null branch."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> JsonSchemaValue:
        return self.generate_inner(schema["schema"])

    def default_schema(self, schema: core_schema.WithDefaultSchema) -> JsonSchemaValue:
        result = super().default_schema(schema)
        if result.get("default", 0) is None:
            del result["default"]
        return result


def schema_for(kind: str) -> dict[str, Any]:
    if kind not in KINDS:
        raise ValueError(f"{kind!r} is not a unit kind; use one of {', '.join(KINDS)}")
    schema = MODELS[kind].model_json_schema(mode="validation", schema_generator=_TomlSchema)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        **schema,
        "title": f"sandman {kind} unit (NAME.{kind}.toml)",
    }


def unit_schema() -> dict[str, Any]:
    """One schema that any unit file satisfies: exactly one of the kinds (each requires its own
    table and allows no other kind's, so one matches). Each kind's definitions are renamed
    KIND.NAME so that they cannot collide, and its own root becomes the definition KIND."""
    definitions: dict[str, Any] = {}
    for kind in KINDS:
        schema = schema_for(kind)
        for name, definition in schema.pop("$defs", {}).items():
            definitions[f"{kind}.{name}"] = _renamed(definition, kind)
        schema.pop("$schema")
        definitions[kind] = _renamed(schema, kind)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "sandman unit file (NAME.sandbox.toml, NAME.network.toml or NAME.slice.toml)",
        "oneOf": [{"$ref": f"#/$defs/{kind}"} for kind in KINDS],
        "$defs": definitions,
    }


def _renamed(node: Any, kind: str) -> Any:
    """`$ref`s to #/$defs/NAME point at #/$defs/KIND.NAME."""
    if isinstance(node, dict):
        return {
            key: (
                value.replace("#/$defs/", f"#/$defs/{kind}.", 1)
                if key == "$ref" and isinstance(value, str)
                else _renamed(value, kind)
            )
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_renamed(item, kind) for item in node]
    return node
