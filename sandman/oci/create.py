"""`create`: the init made in its namespaces, cgroup and root, stopped at its exec gate (the
`exec.fifo` of the container's state dir) until `start`; the pid file written; the runtime gone
before the init runs anything of the container's (spawn's first child forks it and exits, so it
is reparented to the client's subreaper)."""

import contextlib
import os
import signal
import time
from collections.abc import Mapping
from typing import Any, NamedTuple

from sandman.kernel import spawn
from sandman.kernel import syscalls as sc
from sandman.kernel.cgroup import CgroupDriver
from sandman.oci import bundle as oci_bundle
from sandman.oci import cgroups, hooks, lifecycle
from sandman.oci.client_files import connect_console, write_pid_file
from sandman.oci.errors import OciError
from sandman.oci.state import Store, Stored, check_id


def create(
    store: Store,
    container_id: str,
    bundle: str,
    pid_file: str | None,
    console_socket: str | None,
) -> Stored:
    check_id(container_id)
    bundle = os.path.abspath(bundle)
    config = oci_bundle.load(bundle)
    process = config["process"]
    if process.get("terminal") and not console_socket:
        raise OciError("process.terminal is true: a --console-socket is required")
    directory = store.make(container_id)
    stored: Stored | None = None
    try:
        with store.locked(container_id):
            stored = _create(
                store, _Request(container_id, bundle, config, directory, console_socket)
            )
            if pid_file:
                write_pid_file(pid_file, stored.pid)
            hooks.run("createRuntime", stored.hooks, lifecycle.state_json(stored, directory))
    except BaseException:
        _undo(store, container_id, stored, cgroups.path_of(config, container_id))
        raise
    return stored


class _Request(NamedTuple):
    container_id: str
    bundle: str
    config: oci_bundle.Config
    directory: str
    console_socket: str | None


def _create(store: Store, request: _Request) -> Stored:
    container_id, bundle, config = request.container_id, request.bundle, request.config
    directory, console_socket = request.directory, request.console_socket
    process = config["process"]
    namespaces = oci_bundle.namespaces(config)
    idmap = oci_bundle.id_mapping(config, namespaces.flags)
    owner = oci_bundle.host_root_ids(idmap)
    gate = os.path.join(directory, "exec.fifo")
    os.mkfifo(gate, 0o622)
    os.chown(gate, *owner)
    stage = os.path.join(directory, "rootfs")
    os.mkdir(stage, 0o755)
    resources = config.get("linux", {}).get("resources") or {}
    cgroup = cgroups.path_of(config, container_id)
    stored = Stored(
        id=container_id,
        pid=0,
        pid_start=0,
        bundle=bundle,
        created=_now(),
        cgroup=cgroup,
        annotations=dict(config.get("annotations") or {}),
        hooks=dict(config.get("hooks") or {}),
    )
    store.save(stored)
    driver = cgroups.driver(cgroup)
    driver.create(cgroup)
    driver.set_limits(cgroup, cgroups.limits(resources))
    _set_cpu(driver, cgroup, resources)
    rules = cgroups.device_rules(resources, config.get("linux", {}).get("devices"))
    if rules is not None:
        driver.restrict_devices(cgroup, rules)
    console = connect_console(console_socket) if console_socket else None
    try:
        spec = spawn.SpawnSpec(
            name=container_id,
            command=oci_bundle.command(process),
            confinement=oci_bundle.confinement(process, config),
            # spawn makes the user namespace itself, from the id map, before the others.
            namespaces=namespaces.flags & ~sc.CLONE_NEWUSER,
            rootfs=oci_bundle.rootfs_plan(config, bundle, stage, namespaces, owner),
            log_path=None,
            hostname=config.get("hostname") if namespaces.flags & sc.CLONE_NEWUTS else None,
            idmap=idmap,
            join_cgroup=lambda pid: driver.join(cgroup, pid),
            cgroup_dir=driver.birth_dir(cgroup),
            exec_gate=gate,
            console_socket=console.fileno() if console else None,
            rlimits=oci_bundle.rlimits(process),
            exact_environment=True,
            join_namespaces=namespaces.joined,
            oom_score_adj=process.get("oomScoreAdj"),
        )
        pid = spawn.spawn(spec)
    except spawn.SpawnError as exc:
        raise OciError(str(exc)) from None
    finally:
        if console is not None:
            console.close()
    stored = stored._replace(pid=pid, pid_start=lifecycle.start_time(pid) or 0)
    store.save(stored)
    return stored


def _set_cpu(driver: CgroupDriver, cgroup: str, resources: Mapping[str, Any]) -> None:
    """A CPU setting the host cannot honour fails the create, as runc's does: an engine that
    asked for a cpuset must not get a container that runs anywhere."""
    cpu = cgroups.cpu_settings(resources)
    if cpu is None:
        return
    try:
        warnings = driver.set_cpu(cgroup, cpu)
    except OSError as exc:
        raise OciError(f"linux.resources.cpu: {exc}") from None
    if warnings:
        raise OciError("linux.resources.cpu: " + "; ".join(warnings))


def _undo(store: Store, container_id: str, stored: Stored | None, cgroup: str) -> None:
    """A failed create leaves nothing: the init killed, the cgroup and the state dir removed."""
    if stored is not None and stored.pid > 0:
        with contextlib.suppress(ProcessLookupError):
            os.kill(stored.pid, signal.SIGKILL)
    with contextlib.suppress(OSError, ValueError):
        driver = cgroups.driver(cgroup)
        if driver.exists(cgroup):
            driver.kill(cgroup)
            driver.remove(cgroup)
        cgroups.remove_default_parent(driver, cgroup)
    store.remove(container_id)


def _now() -> str:
    """RFC 3339 in UTC with nanoseconds, as runc writes `created` (time, not datetime: its
    import is a millisecond and a half of every create)."""
    nanoseconds = time.time_ns()
    seconds, fraction = divmod(nanoseconds, 10**9)
    return time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds)) + f"{fraction:09d}Z"
