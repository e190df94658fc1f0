"""`sandman validate DIR`: load and check every unit, change nothing."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from sandman import output
from sandman.images.config import configs_in
from sandman.paths import Paths
from sandman.units.read import read_units


def run(args: argparse.Namespace) -> int:
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    desired = read_units(args.directory, paths.tag, images=configs_in(paths.image_dir))
    counts = Counter(
        {
            "sandbox": len(desired.sandboxes),
            "network": len(desired.networks),
            "slice": len(desired.slices),
        }
    )
    from_image = {
        f"sandbox/{name}": [f"sandbox.{key}" for key in sandbox.from_image]
        for name, sandbox in sorted(desired.sandboxes.items())
        if sandbox.from_image
    }
    if args.json:
        report = {"valid": True, "directory": args.directory, "units": dict(counts)}
        report |= {"from_image": from_image} if from_image else {}
        output.print_json(
            report | ({"warnings": list(desired.warnings)} if desired.warnings else {})
        )
    else:
        for warning in desired.warnings:
            sys.stderr.write(f"sandman: warning: {warning}\n")
        listed = ", ".join(output.plural(n, kind) for kind, n in counts.items())
        sys.stdout.write(f"{args.directory}: {listed}: valid\n")
        for name, keys in from_image.items():
            sys.stdout.write(f"{name}: {', '.join(keys)} from its image's config\n")
    return 0
