"""Each verb of the command line, from the parsed arguments to its exit code and output."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

from sandman.oci import verbs
from sandman.oci.errors import OciError
from sandman.oci.state import Store

Args = Mapping[str, Any]


def _create(store: Store, args: Args) -> int:
    from sandman.oci.create import create

    if args["preserve_fds"]:
        raise OciError("--preserve-fds is not supported")
    foreground_run = args["verb"] == "run" and not args["detach"]
    if foreground_run:
        from sandman.oci.run import become_subreaper

        become_subreaper()
    create(store, args["id"], args["bundle"], args["pid_file"], args["console_socket"])
    if args["verb"] == "run":
        from sandman.oci.run import run

        return run(store, args["id"], args["detach"])
    return 0


def _start(store: Store, args: Args) -> int:
    verbs.start(store, args["id"])
    return 0


def _state(store: Store, args: Args) -> int:
    print(json.dumps(verbs.state(store, args["id"]), indent=2))
    return 0


def _kill(store: Store, args: Args) -> int:
    verbs.kill(store, args["id"], verbs.parse_signal(args["signal"]), args["all"])
    return 0


def _delete(store: Store, args: Args) -> int:
    verbs.delete(store, args["id"], args["force"])
    return 0


def _exec(store: Store, args: Args) -> int:
    from sandman.oci.exec import exec_in

    return exec_in(store, args)


def _ps(store: Store, args: Args) -> int:
    pids = verbs.ps(store, args["id"])
    print(json.dumps(pids) if args["format"] == "json" else "\n".join(["PID", *map(str, pids)]))
    return 0


def _pause(store: Store, args: Args) -> int:
    verbs.pause(store, args["id"], frozen=args["verb"] == "pause")
    return 0


def _update(store: Store, args: Args) -> int:
    from sandman.oci.update import update

    return update(store, args)


def _features(store: Store, args: Args) -> int:
    print(json.dumps(verbs.features(), indent=2))
    return 0


def _list(store: Store, args: Args) -> int:
    for container_id in store.ids():
        try:
            print(container_id, verbs.state(store, container_id)["status"])
        except OciError:
            continue
    return 0


VERBS: dict[str, Callable[[Store, Args], int]] = {
    "create": _create,
    "run": _create,
    "start": _start,
    "state": _state,
    "kill": _kill,
    "delete": _delete,
    "exec": _exec,
    "ps": _ps,
    "pause": _pause,
    "resume": _pause,
    "update": _update,
    "features": _features,
    "list": _list,
}
