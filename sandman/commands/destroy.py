"""`sandman destroy DIR|NAME...`: take down what DIR's units (or the named objects) made, and,
when that leaves nothing applied, the orphans a killed apply left. A destroy plan, carried out by
the applier as an apply's would be (sandman/reconcile.py)."""

from __future__ import annotations

import argparse
import os
import sys

from sandman.errors import UsageError
from sandman.paths import Paths
from sandman.progress import Lines

_KINDS = ("sandbox", "network", "slice")


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise UsageError("destroy changes namespaces, mounts, links and cgroups: run it as root")
    from sandman.reconcile import destroy

    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    progress = Lines()

    def waiting() -> None:
        progress.note(f"waiting for another apply to release `{paths.state_dir}/lock`")

    from_dirs, named = _targets(args.targets)
    result = destroy(
        paths, progress, from_dirs | named, named=named, wait=not args.no_wait, on_wait=waiting
    )
    if not result.actions:
        sys.stdout.write("Nothing to destroy: none of these is applied.\n")
        return 0
    sys.stdout.write(f"Destroy complete: {len(result.actions)} destroyed.\n")
    return 0


def _targets(arguments: list[str]) -> tuple[set[tuple[str, str]], set[tuple[str, str]]]:
    """Objects named on the command line: (those of unit directories, every NAME.KIND.toml in
    them, valid or not; those named as KIND/NAME, or a bare NAME for a sandbox). A named one
    must be applied; a unit directory may hold units never applied."""
    from_dirs, named = set(), set()
    for argument in arguments:
        if os.path.isdir(argument):
            for entry in os.listdir(argument):
                parts = entry.split(".")
                if len(parts) == 3 and parts[2] == "toml" and parts[1] in _KINDS:
                    from_dirs.add((parts[1], parts[0]))
        elif "/" in argument and argument.split("/", 1)[0] in _KINDS:
            kind, name = argument.split("/", 1)
            named.add((kind, name))
        else:
            named.add(("sandbox", argument))
    return from_dirs, named
