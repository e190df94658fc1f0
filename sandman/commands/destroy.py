"""`sandman destroy DIR|NAME...`: take down what DIR's units (or the named objects) made, and,
when that leaves nothing applied, the orphans a killed apply left."""

from __future__ import annotations

import argparse
import os
import sys

from sandman.apply.applier import apply
from sandman.apply.context import ApplyContext
from sandman.apply.lock import state_lock
from sandman.apply.orphans import sweep_cgroups
from sandman.errors import UsageError
from sandman.observe.facts import ActualState
from sandman.observe.gather import gather
from sandman.paths import Paths
from sandman.plan.actions import Action
from sandman.plan.diff import Plan
from sandman.plan.diff import orphan_removal as _remove
from sandman.progress import Lines
from sandman.units.desired import Desired

_ORDER = ("sandbox", "network", "slice")


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise UsageError("destroy changes namespaces, mounts, links and cgroups: run it as root")
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    with state_lock(paths.state_dir, wait=not args.no_wait):
        actual = gather(paths.state_dir, orphans=True)
        wanted = _targets(args.targets)
        present = _ordered(wanted, actual)
        actions = [Action("destroy", kind, name, "unit_removed") for kind, name in present]
        if len(present) == len(actual.records):
            # Nothing stays applied: what a killed apply left goes too.
            actions[:0] = [_remove(orphan) for orphan in actual.orphans]
        ctx = ApplyContext(paths, Desired(paths.tag), actual, Lines())
        if not actions:
            sweep_cgroups(ctx)
            sys.stdout.write("Nothing to destroy: none of these is applied.\n")
            return 0
        apply(ctx, Plan(tuple(actions)))
    sys.stdout.write(f"Destroy complete: {len(actions)} destroyed.\n")
    return 0


def _targets(arguments: list[str]) -> set[tuple[str, str]]:
    """Objects named on the command line: a unit directory (every NAME.KIND.toml in it, valid or
    not), KIND/NAME, or a bare NAME for a sandbox."""
    wanted = set()
    for argument in arguments:
        if os.path.isdir(argument):
            for entry in os.listdir(argument):
                parts = entry.split(".")
                if len(parts) == 3 and parts[2] == "toml" and parts[1] in _ORDER:
                    wanted.add((parts[1], parts[0]))
        elif "/" in argument and argument.split("/", 1)[0] in _ORDER:
            kind, name = argument.split("/", 1)
            wanted.add((kind, name))
        else:
            wanted.add(("sandbox", argument))
    return wanted


def _ordered(wanted: set[tuple[str, str]], actual: ActualState) -> list[tuple[str, str]]:
    present = [key for key in wanted if key in actual.records]

    def depth(key: tuple[str, str]) -> int:
        path = actual.records[key].runtime.get("cgroup", "")
        return -len(str(path).split("/"))

    return sorted(present, key=lambda k: (_ORDER.index(k[0]), depth(k), k[1]))
