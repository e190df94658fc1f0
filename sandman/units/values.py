"""The value syntaxes of unit files as pydantic types: sizes, durations, CPU shares, names.

The parsers themselves are in scalars.py and parsers.py, free of pydantic (the kept validators,
compiled.py, call them without these types); scalars' names are re-exported here.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BeforeValidator, PlainSerializer, WithJsonSchema

from sandman.units import parsers
from sandman.units.scalars import (
    NAME_MAX,
    NAME_RE,
    format_duration_ns,
    parse_absolute_path,
    parse_name,
    parse_percent,
    parse_signal,
)

_SIZE_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": r"^\s*\d+\s*[KMGTkmgt]?\s*$"},
    ],
    "description": 'bytes, or a number with K, M, G or T (powers of 1024), e.g. "256M"',
}
_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*\d+(\.\d+)?\s*(ms|s|min|h)\s*$",
    "description": 'a duration, e.g. "5s", "250ms", "2min"',
}
_SIGNED_DURATION_SCHEMA = {
    "type": "string",
    "pattern": r"^\s*[+-]?\s*\d+(\.\d+)?\s*(ms|s|min|h)\s*$",
    "description": 'a duration that may be negative, e.g. "-10s", "1h"',
}

# Sizes are held as bytes and durations as nanoseconds; the record and `plan --json` show them so.
Size = Annotated[int, BeforeValidator(parsers.size), WithJsonSchema(_SIZE_SCHEMA)]
Duration = Annotated[
    int,
    BeforeValidator(parsers.duration),
    PlainSerializer(format_duration_ns, return_type=str),
    WithJsonSchema(_DURATION_SCHEMA),
]
SignedDuration = Annotated[
    int,
    BeforeValidator(parsers.signed_duration),
    PlainSerializer(format_duration_ns, return_type=str),
    WithJsonSchema(_SIGNED_DURATION_SCHEMA),
]
CpuPercent = Annotated[
    float,
    BeforeValidator(parse_percent),
    PlainSerializer(parsers.percent_text, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$",
            "description": 'a share of one CPU, e.g. "50%"; "200%" is two CPUs',
        }
    ),
]
StopSignal = Annotated[
    str,
    BeforeValidator(parse_signal),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1, "maximum": 64},
                {
                    "type": "string",
                    "pattern": r"^\s*([Ss][Ii][Gg])?[A-Za-z][A-Za-z0-9]*([+-]\d+)?\s*$",
                },
            ],
            "description": 'a signal name or number, e.g. "SIGTERM", "SIGRTMIN+3", 15',
        }
    ),
]
UnitName = Annotated[
    str,
    BeforeValidator(parse_name),
    WithJsonSchema({"type": "string", "pattern": NAME_RE.pattern, "maxLength": NAME_MAX}),
]
AbsolutePath = Annotated[
    str,
    BeforeValidator(parse_absolute_path),
    WithJsonSchema({"type": "string", "pattern": "^/", "description": "an absolute path"}),
]
