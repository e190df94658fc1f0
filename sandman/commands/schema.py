"""`sandman schema [KIND]`: the JSON Schema of one kind of unit file, or without KIND the one
schema any unit file satisfies, for editors and checkers."""

from __future__ import annotations

import argparse

from sandman import output
from sandman.units.schema import schema_for, unit_schema


def run(args: argparse.Namespace) -> int:
    if args.kind:
        output.print_json(schema_for(args.kind))
    else:
        output.print_json(unit_schema())
    return 0
