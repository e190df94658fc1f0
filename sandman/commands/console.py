"""`sandman console NAME`: the terminal attached to a booted sandbox's /dev/console, through its
console keeper (kernel/console.py); Ctrl-] three times within a second detaches."""

from __future__ import annotations

import argparse
import os
import sys

from sandman.errors import SandmanError, UsageError
from sandman.observe import procs
from sandman.observe.facts import Record
from sandman.observe.records import read_records
from sandman.paths import Paths


def run(args: argparse.Namespace) -> int:
    if os.geteuid() != 0:
        raise UsageError("console reaches a sandbox's console, which only root may: run it as root")
    paths = Paths.resolve(args.state_dir, args.image_dir, args.log_dir)
    record = _running_booted(paths, args.name)
    from sandman.kernel import console

    runtime = os.path.join(paths.state_dir, "sandboxes", record.name)
    try:
        client = console.connect(runtime)
    except (FileNotFoundError, ConnectionRefusedError) as exc:
        raise SandmanError(
            f"sandbox {args.name!r} has no console keeper running ({exc.strerror}); "
            f"`sandman restart {args.name}` starts one with the sandbox"
        ) from exc
    with client:
        if os.isatty(sys.stdin.fileno()):
            print(
                f"Attached to the console of {args.name}. "
                "Press Ctrl-] three times within a second to detach.",
                file=sys.stderr,
            )
        ended = console.attach(client, sys.stdin.fileno(), sys.stdout.fileno())
    if ended == console.CLOSED:
        print(f"\r\nsandman console: the console of {args.name} was closed", file=sys.stderr)
        return 1
    if os.isatty(sys.stdin.fileno()):
        print(f"\r\nDetached from the console of {args.name}.", file=sys.stderr)
    return 0


def _running_booted(paths: Paths, name: str) -> Record:
    record = next(
        (r for r in read_records(paths.state_dir) if r.kind == "sandbox" and r.name == name),
        None,
    )
    if record is None:
        raise UsageError(f"no sandbox {name!r} is applied in `{paths.state_dir}`")
    if not record.sandbox.boot:
        raise UsageError(
            f"sandbox {name!r} does not boot an init (`[sandbox] boot = true`): it has no "
            f"console; `sandman logs {name}` shows its output, `sandman shell {name}` enters it"
        )
    if record.stopped:
        raise SandmanError(f"sandbox {name!r} is stopped; `sandman start {name}` starts it")
    if not procs.is_running(record.runtime.pid, record.runtime.start_time):
        raise SandmanError(f"sandbox {name!r} is not running (its init exited)")
    return record
