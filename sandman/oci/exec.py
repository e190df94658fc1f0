"""`exec`: a process in a running container, through sandman's own entering path
(kernel/enter.py): the init's cgroup and namespaces joined, the process's confinement taken
before the command's process is forked into the pid namespace. Foreground: the runtime waits
and exits with the process's status. --detach: it returns once the process is forked, and the
process is reparented to the client's subreaper."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from sandman.kernel import enter
from sandman.oci import bundle as oci_bundle
from sandman.oci import cgroups, lifecycle
from sandman.oci.client_files import connect_console, read_json_object, write_pid_file
from sandman.oci.errors import OciError, not_running
from sandman.oci.state import Store


def exec_in(store: Store, args: Mapping[str, Any]) -> int:
    container_id = str(args["id"])
    stored = store.load(container_id)
    if lifecycle.status(stored, store.directory(container_id)) not in ("running", "created"):
        raise not_running(container_id)
    config = oci_bundle.load(stored.bundle)
    process = _process(args, config)
    tty = bool(process.get("terminal")) or bool(args["tty"])
    if tty and not args["console_socket"]:
        raise OciError("a terminal needs --console-socket")
    cgroup = stored.cgroup
    spec = enter.EnterSpec(
        pid=stored.pid,
        command=oci_bundle.command(process),
        confinement=oci_bundle.confinement(process, config),
        term=_term(process),
        join_cgroup=(lambda pid: cgroups.driver(cgroup).join(cgroup, pid)) if cgroup else None,
    )
    console = connect_console(args["console_socket"]) if tty else None
    pid_read, pid_write = os.pipe2(os.O_CLOEXEC)
    try:
        stdio = enter.Stdio(
            fds=(0, 1, 2),
            pty_socket=console.fileno() if console else None,
            oci_console=True,
            pid_pipe=pid_write,
            detached=bool(args["detach"]),
        )
        child = enter.start_inside(spec, stdio)
    finally:
        os.close(pid_write)
        if console is not None:
            console.close()
    with os.fdopen(pid_read, "rb") as pipe:
        line = pipe.readline().strip()
    if not line:
        _, status = os.waitpid(child, 0)
        raise OciError(f"exec failed: the entering process exited with {enter.exit_code(status)}")
    if args["pid_file"]:
        write_pid_file(str(args["pid_file"]), line.decode())
    _, status = os.waitpid(child, 0)
    return 0 if args["detach"] else enter.exit_code(status)


def _process(args: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    if args["process"]:
        return read_json_object(str(args["process"]), "--process", "an OCI process")
    process = dict(config["process"])
    command = [c for c in args["command"] if c != "--"]
    if not command:
        raise OciError("exec needs --process FILE or a command after the id")
    process["args"] = command
    process["terminal"] = bool(args["tty"])
    if args["cwd"]:
        process["cwd"] = args["cwd"]
    process["env"] = [*(process.get("env") or []), *args["env"]]
    return process


def _term(process: Mapping[str, Any]) -> str:
    for item in process.get("env") or []:
        if str(item).startswith("TERM="):
            return str(item)[5:]
    return "xterm" if process.get("terminal") else "dumb"
