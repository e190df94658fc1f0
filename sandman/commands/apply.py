"""`sandman apply DIR`: make the host what DIR declares, printing each action as it runs."""

from __future__ import annotations

import argparse
import os
import sys

from sandman import output
from sandman.errors import UsageError
from sandman.paths import Paths
from sandman.progress import JsonEvents, Lines, Progress
from sandman.reconcile import reconcile


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise UsageError("apply changes namespaces, mounts, links and cgroups: run it as root")
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    progress: Progress = JsonEvents() if args.json else Lines()

    from sandman.daemon.instance import daemon_running

    if daemon_running(paths.state_dir):
        progress.note(
            f"a sandman daemon manages `{paths.state_dir}`: its next pass applies its own unit "
            "directory again, which may undo what this apply changes"
        )

    def waiting() -> None:
        progress.note(f"waiting for another apply to release `{paths.state_dir}/lock`")

    result = reconcile(
        paths,
        args.directory,
        progress,
        prune=not args.no_prune,
        target=args.target,
        wait=not args.no_wait,
        on_wait=waiting,
    )
    if not result.actions:
        if not args.json:
            sys.stdout.write(f"No changes: the host matches {args.directory}.\n")
        return 0
    if args.json:
        output.print_json({"summary": result.summary()})
    else:
        sys.stdout.write(f"Apply complete: {result.done()}.\n")
    return 0
