"""`sandman plan DIR`: what apply would do, computed from the units and the observed host."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from sandman import output
from sandman.cli import EXIT_CHANGES_PENDING
from sandman.paths import Paths
from sandman.plan.diff import Plan
from sandman.reconcile import preview


def run(args: argparse.Namespace) -> int:
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    result = preview(paths, args.directory, prune=not args.no_prune, target=args.target)
    if args.json:
        output.print_json(result.to_json())
    else:
        for warning in result.warnings:
            sys.stderr.write(f"sandman: warning: {warning}\n")
        sys.stdout.write(render(result, args.directory))
    if args.detailed_exitcode and result.actions:
        return EXIT_CHANGES_PENDING
    return 0


def render(result: Plan, directory: str) -> str:
    if not result.actions:
        return f"No changes: the host matches {directory}.\n"
    paint = _painter()
    lines = [paint(line) for action in result.actions for line in action.lines()]
    summary = result.summary()
    counts = ", ".join(f"{n} to {kind}" for kind, n in summary.items() if kind != "repair" or n)
    lines += ["", f"Plan: {counts}."]
    return "\n".join(lines) + "\n"


# ANSI colours of the symbols, as terraform: green create, yellow update, red destroy.
_COLOURS = {"+": "32", "~": "33", "-/+": "35", "-": "31", "!": "36"}


def _painter() -> Callable[[str], str]:
    """Colour the symbol of each action line on a terminal, unless NO_COLOR is set."""
    if not sys.stdout.isatty() or os.environ.get("NO_COLOR"):
        return lambda line: line

    def paint(line: str) -> str:
        symbol, _, rest = line.partition(" ")
        colour = _COLOURS.get(symbol)
        return f"\033[{colour}m{symbol}\033[0m {rest}" if colour else line

    return paint
