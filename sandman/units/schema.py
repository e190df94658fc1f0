"""JSON Schemas of the unit kinds, generated from the models (the one source of truth)."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import core_schema

from sandman.units.model import KINDS, MODELS


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
