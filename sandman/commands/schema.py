"""`sandman schema [KIND]`: the JSON Schema of the unit files, for editors and checkers."""

from __future__ import annotations

import argparse

from sandman import output
from sandman.units.model import KINDS
from sandman.units.schema import schema_for


def run(args: argparse.Namespace) -> int:
    if args.kind:
        output.print_json(schema_for(args.kind))
    else:
        output.print_json({kind: schema_for(kind) for kind in KINDS})
    return 0
