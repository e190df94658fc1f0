"""Renderers for what sandman prints. Data goes to stdout, human progress and problems to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from sandman.errors import UnitError


def print_json(data: Any, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    out.write(json.dumps(data, indent=2, sort_keys=False) + "\n")


def unit_error_json(error: UnitError) -> dict[str, Any]:
    return {
        "error": {
            "kind": "invalid_units",
            "message": f"{len(error.problems)} problem(s) in the unit files; nothing was changed",
            "problems": [p.to_json() for p in error.problems],
        }
    }


def unit_error_text(error: UnitError) -> str:
    count = len(error.problems)
    noun = "problem" if count == 1 else "problems"
    return f"{error}\nsandman: {count} {noun} found; nothing was changed\n"


def plural(count: int, noun: str) -> str:
    if count == 1:
        return f"{count} {noun}"
    return f"{count} {noun}es" if noun.endswith(("s", "x")) else f"{count} {noun}s"


def size(value: int) -> str:
    """Bytes for a person: powers of 1024 with K, M, G, T as unit files write sizes; one decimal
    under 10 (`2.1M`), none above (`296K`). (plan shows a unit's own values exactly instead.)"""
    amount = float(value)
    for unit in ("B", "K", "M", "G"):
        if amount < 1024:
            return f"{amount:.0f}{unit}" if unit == "B" or amount >= 10 else f"{amount:.1f}{unit}"
        amount /= 1024
    return f"{amount:.1f}T"
