"""`sandman stop|start|restart NAME...`: stop applied sandboxes and keep them recorded, start them
again from their records, or both (sandman/reconcile.py `lifecycle`, plan/lifecycle.py)."""

from __future__ import annotations

import argparse
import os
import sys

from sandman import output
from sandman.errors import UsageError
from sandman.paths import Paths
from sandman.progress import JsonEvents, Lines, Progress

_DONE = {"stop": "Stop", "start": "Start", "restart": "Restart"}


def run(args: argparse.Namespace) -> int:
    verb = args.verb
    if os.geteuid() != 0:
        raise UsageError(f"{verb} changes namespaces, mounts, links and cgroups: run it as root")
    from sandman.reconcile import lifecycle

    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    progress: Progress = JsonEvents() if args.json else Lines()

    def waiting() -> None:
        progress.note(f"waiting for another apply to release `{paths.state_dir}/lock`")

    names = [_sandbox_name(argument) for argument in args.names]
    result = lifecycle(paths, progress, verb, names, wait=not args.no_wait, on_wait=waiting)
    if args.json:
        output.print_json({"summary": result.summary()})
    elif result.actions:
        sys.stdout.write(f"{_DONE[verb]} complete: {result.done()}.\n")
    else:
        sys.stdout.write(f"Nothing to {verb}.\n")
    return 0


def _sandbox_name(argument: str) -> str:
    """NAME, or sandbox/NAME as destroy takes it; networks and slices neither stop nor start."""
    kind, _, name = argument.rpartition("/")
    if kind not in ("", "sandbox") or not name:
        raise UsageError(f"{argument}: only sandboxes stop and start; name one (NAME)")
    return name
