"""`sandman daemon [DIR]`: keep the host as DIR declares, as a service (see sandman/daemon/)."""

from __future__ import annotations

import argparse
import os

from sandman.daemon.loop import Daemon, Options
from sandman.errors import UsageError
from sandman.paths import Paths

DEFAULT_UNITS = "/etc/sandman/units"


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise UsageError("the daemon changes namespaces, mounts, links and cgroups: run it as root")
    if args.drift_interval < 0 or args.debounce < 0:
        raise UsageError("--drift-interval and --debounce take a number of at least 0")
    options = Options(
        directory=os.path.abspath(args.directory or DEFAULT_UNITS),
        paths=Paths.resolve(args.state_dir, args.image_dir, args.log_dir),
        drift_interval=args.drift_interval,
        debounce=args.debounce / 1000,
        on_stop=args.on_stop,
    )
    return Daemon(options).run()
