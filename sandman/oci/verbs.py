"""The verbs after `create`: start, state, kill, delete, ps, pause, resume, features."""

from __future__ import annotations

import contextlib
import os
import select
import signal

from sandman.oci import cgroups, lifecycle
from sandman.oci.errors import OciError, not_running
from sandman.oci.state import Store, Stored


def start(store: Store, container_id: str) -> None:
    failed: OciError | None = None
    with store.locked(container_id):
        stored = store.load(container_id)
        directory = store.directory(container_id)
        current = lifecycle.status(stored, directory)
        if current != "created":
            raise OciError(f"cannot start a container that is {current}: {container_id!r}")
        # Prestart hooks run at `start`, before the process (the runtime-tools suite holds
        # runtimes to that; createRuntime hooks ran at `create`).
        try:
            _hooks("prestart", stored, lifecycle.state_json(stored, directory))
        except OciError as exc:
            failed = exc
        else:
            _open_gate(os.path.join(directory, "exec.fifo"), stored)
            stored = stored._replace(started=True)
            store.save(stored)
    if failed is not None:
        # A failed prestart hook stops the container and the lifecycle goes on to its end
        # (runtime-spec): nothing of it stays, the poststop hooks run.
        delete(store, container_id, force=True)
        raise failed
    _hooks("poststart", stored, lifecycle.state_json(stored, directory), fatal=False)


def _hooks(stage: str, stored: Stored, state: dict[str, object], fatal: bool = True) -> None:
    """The hooks of STAGE; the hook runner (subprocess) is imported only when there are some:
    engines call the runtime several times per container, each a new process."""
    if stored.hooks.get(stage):
        from sandman.oci import hooks

        hooks.run(stage, stored.hooks, state, fatal)


def _open_gate(path: str, stored: Stored) -> None:
    """Open the FIFO for reading: the init's open for writing returns, it writes one byte and
    execs. The init's exit while we wait (a kill) ends the wait as well.

    The pidfd is taken while the init is held at the gate: once the FIFO is open the command
    may run, exit and be reaped by the engine's shim before a later pidfd_open (ESRCH)."""
    pidfd = _pidfd_of_held_init(stored)
    try:
        fifo = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            _wait_for_the_gate_byte(fifo, pidfd, stored)
        finally:
            os.close(fifo)
    finally:
        os.close(pidfd)
        os.unlink(path)


def _pidfd_of_held_init(stored: Stored) -> int:
    try:
        pidfd = os.pidfd_open(stored.pid)
    except ProcessLookupError:
        raise _exited_before_start(stored) from None
    if not lifecycle.alive(stored):  # the pid was reused since the status check
        os.close(pidfd)
        raise _exited_before_start(stored)
    return pidfd


def _wait_for_the_gate_byte(fifo: int, pidfd: int, stored: Stored) -> None:
    while True:
        ready, _, _ = select.select([fifo, pidfd], [], [])
        if fifo in ready:
            with contextlib.suppress(BlockingIOError):
                if os.read(fifo, 1):
                    return
        if pidfd in ready:
            raise _exited_before_start(stored)


def _exited_before_start(stored: Stored) -> OciError:
    return OciError(f"container {stored.id!r} exited before it was started")


def state(store: Store, container_id: str) -> dict[str, object]:
    stored = store.load(container_id)
    return lifecycle.state_json(stored, store.directory(container_id))


def parse_signal(text: str) -> int:
    if text.isdigit():
        return int(text)
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    try:
        return int(signal.Signals[name])
    except KeyError:
        raise OciError(f"unknown signal {text!r}") from None


def kill(store: Store, container_id: str, signum: int, every: bool) -> None:
    stored = store.load(container_id)
    if not lifecycle.alive(stored):
        raise not_running(container_id)
    if every and stored.cgroup is not None:
        for pid in cgroups.driver(stored.cgroup).pids(stored.cgroup):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)
        return
    pidfd = os.pidfd_open(stored.pid)
    try:
        if lifecycle.start_time(stored.pid) != stored.pid_start:
            raise not_running(container_id)
        signal.pidfd_send_signal(pidfd, signum)
    except ProcessLookupError:
        raise not_running(container_id) from None
    finally:
        os.close(pidfd)


def delete(store: Store, container_id: str, force: bool) -> None:
    try:
        stored = store.load(container_id)
    except OciError:
        if force:
            return
        raise
    directory = store.directory(container_id)
    with store.locked(container_id):
        current = lifecycle.status(stored, directory)
        if current != "stopped" and not force:
            raise OciError(
                f"cannot delete container {container_id!r} that is not stopped: {current}"
            )
        if stored.cgroup is not None:
            driver = cgroups.driver(stored.cgroup)
            if driver.exists(stored.cgroup):
                driver.kill(stored.cgroup)
                driver.remove(stored.cgroup)
            cgroups.remove_default_parent(driver, stored.cgroup)
        elif lifecycle.alive(stored):
            with contextlib.suppress(ProcessLookupError):
                os.kill(stored.pid, signal.SIGKILL)
        final = lifecycle.state_json(stored, directory)
        store.remove(container_id)
    final["status"] = "stopped"
    _hooks("poststop", stored, final, fatal=False)


def ps(store: Store, container_id: str) -> list[int]:
    stored = store.load(container_id)
    if stored.cgroup is None:
        return [stored.pid] if lifecycle.alive(stored) else []
    driver = cgroups.driver(stored.cgroup)
    return driver.pids(stored.cgroup) if driver.exists(stored.cgroup) else []


def pause(store: Store, container_id: str, frozen: bool) -> None:
    with store.locked(container_id):
        stored = store.load(container_id)
        current = lifecycle.status(stored, store.directory(container_id))
        wanted = "running" if frozen else "paused"
        if current != wanted:
            verb = "pause" if frozen else "resume"
            raise OciError(
                f"cannot {verb} container {container_id!r}: it is {current}: container not running"
            )
        if stored.cgroup is None:
            raise OciError(f"container {container_id!r} has no cgroup to freeze")
        try:
            cgroups.driver(stored.cgroup).freeze(stored.cgroup, frozen)
        except OSError as exc:
            raise OciError(f"cannot {'freeze' if frozen else 'thaw'} the cgroup: {exc}") from None


def features() -> dict[str, object]:
    from sandman.oci.bundle import NAMESPACES

    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": lifecycle.OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "poststart", "poststop"],
        "mountOptions": ["ro", "rw", "bind", "rbind"],
        "linux": {
            "namespaces": sorted(NAMESPACES),
            "capabilities": sorted(_capability_names()),
            "cgroup": {"v1": True, "v2": True, "systemd": False},
            "seccomp": {
                "enabled": True,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_LOG"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_MASKED_EQ"],
            },
        },
    }


def _capability_names() -> list[str]:
    from sandman.capabilities import CAPABILITIES

    return list(CAPABILITIES)
