"""`sandman apply DIR`: make the host what DIR declares, printing each action as it runs."""

from __future__ import annotations

import argparse
import os
import sys

from sandman import output
from sandman.apply.applier import apply
from sandman.apply.context import ApplyContext
from sandman.apply.lock import state_lock
from sandman.errors import UsageError
from sandman.observe.gather import gather
from sandman.paths import Paths
from sandman.plan.diff import plan, targeted
from sandman.progress import JsonEvents, Lines, Progress
from sandman.units.read import read_units


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise UsageError("apply changes namespaces, mounts, links and cgroups: run it as root")
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    progress: Progress = JsonEvents() if args.json else Lines()

    def waiting() -> None:
        progress.note(f"waiting for another apply to release `{paths.state_dir}/lock`")

    with state_lock(paths.state_dir, wait=not args.no_wait, on_wait=waiting):
        actual = gather(paths.state_dir)
        desired = read_units(args.directory, paths.tag, sticky=actual.addresses())
        result = plan(desired, actual, prune=not args.no_prune)
        if args.target:
            result = targeted(result, desired, args.target)
        if not result.actions:
            if not args.json:
                sys.stdout.write(f"No changes: the host matches {args.directory}.\n")
            return 0
        apply(ApplyContext(paths, desired, actual, progress), result)
    if args.json:
        output.print_json({"summary": result.summary()})
    else:
        done = {
            "create": "created",
            "update": "updated",
            "recreate": "recreated",
            "destroy": "destroyed",
            "repair": "repaired",
        }
        counts = ", ".join(f"{n} {done[kind]}" for kind, n in result.summary().items() if n)
        sys.stdout.write(f"Apply complete: {counts}.\n")
    return 0
