"""`sandman validate DIR`: load and check every unit, change nothing."""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from sandman import output
from sandman.paths import Paths
from sandman.units.cache import UnitCache
from sandman.units.canonicals import Canonicals


def run(args: argparse.Namespace) -> int:
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    desired = _desired(paths, args.directory)
    counts = Counter(
        {
            "sandbox": len(desired.sandboxes),
            "network": len(desired.networks),
            "slice": len(desired.slices),
        }
    )
    from_image = {
        f"sandbox/{name}": [f"sandbox.{key}" for key in keys]
        for name, sandbox in sorted(desired.sandboxes.items())
        if (keys := sandbox.form["resolved"].get("from_image"))
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


def _desired(paths: Paths, directory: str) -> Canonicals:
    """The units resolved, from the unit cache when nothing they depend on changed since a
    validate as root last loaded them without a problem (units/cache.py)."""
    cache = UnitCache(paths.state_dir, paths.image_dir, directory, paths.tag, None)
    cached = cache.lookup()
    if cached is not None:
        return cached
    from sandman.units import compiled
    from sandman.units.read import read_units  # only when the cache cannot answer

    compiled.keep_in(cache.directory)
    desired = read_units(directory, paths.tag, images=cache.images, snapshot=cache.snapshot)
    cache.store(desired)
    return desired.canonicals()
