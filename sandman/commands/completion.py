"""`sandman completion SHELL`: print the shell's completion script."""

from __future__ import annotations

import argparse
import sys

from sandman.completion import script


def run(args: argparse.Namespace) -> int:
    sys.stdout.write(script(args.shell))
    return 0
