"""`sandman validate DIR`: load and check every unit, change nothing."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from sandman import output
from sandman.paths import Paths
from sandman.units.read import read_units


def run(args: argparse.Namespace) -> int:
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    desired = read_units(args.directory, paths.tag)
    counts = Counter(
        {
            "sandbox": len(desired.sandboxes),
            "network": len(desired.networks),
            "slice": len(desired.slices),
        }
    )
    if args.json:
        report = {"valid": True, "directory": args.directory, "units": dict(counts)}
        output.print_json(
            report | ({"warnings": list(desired.warnings)} if desired.warnings else {})
        )
    else:
        for warning in desired.warnings:
            sys.stderr.write(f"sandman: warning: {warning}\n")
        listed = ", ".join(output.plural(n, kind) for kind, n in counts.items())
        sys.stdout.write(f"{args.directory}: {listed}: valid\n")
    return 0
