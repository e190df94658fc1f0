"""`sandman logs NAME [-f]`: what the sandbox's init wrote to stdout and stderr."""

from __future__ import annotations

import argparse
import os
import sys
import time

from sandman.errors import StateError, UsageError
from sandman.kernel import logfile
from sandman.paths import Paths


def run(args: argparse.Namespace) -> int:
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    path = os.path.join(paths.log_dir, f"{args.name}.log")
    try:
        # The same refusals as when apply writes it: a planted link never shows another file.
        fd = logfile.open_for_reading(path)
    except FileNotFoundError:
        raise UsageError(f"no log for {args.name!r}: `{path}` does not exist") from None
    except logfile.LogFileError as exc:
        raise StateError(path, str(exc.strerror)) from None
    handle = os.fdopen(fd, "rb")
    with handle:
        out = sys.stdout.buffer
        while True:
            chunk = handle.read(65536)
            if chunk:
                out.write(chunk)
                continue
            out.flush()
            if not args.follow:
                return 0
            time.sleep(0.2)
