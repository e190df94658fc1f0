"""`update`: a running container's cgroup limits changed in place (what `podman update` and the
runc shim's Update call, for Kubernetes' in-place resize): a LinuxResources object from
`--resources FILE` (or `-`, stdin), and runc's flags for single values, which win over the file.
Only what is given changes; memory, pids and the CPU settings are taken, and any other key of
the object is refused with its name, never ignored."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sandman.oci import cgroups, lifecycle
from sandman.oci.client_files import read_json_object
from sandman.oci.errors import OciError, not_running
from sandman.oci.state import Store

UNDERSTOOD = {"memory": {"limit", "swap"}, "pids": {"limit"}, "cpu": {*cgroups.CPU_KEYS}}
# runc's flags: (flag's dest, resources section, key)
FLAGS = (
    ("memory", "memory", "limit"),
    ("pids_limit", "pids", "limit"),
    ("cpu_shares", "cpu", "shares"),
    ("cpu_quota", "cpu", "quota"),
    ("cpu_period", "cpu", "period"),
    ("cpuset_cpus", "cpu", "cpus"),
    ("cpuset_mems", "cpu", "mems"),
)


def update(store: Store, args: Mapping[str, Any]) -> int:
    container_id = str(args["id"])
    resources = _with_flags(_read(args["resources"]), args)
    _refuse_unknown(resources)
    with store.locked(container_id):
        stored = store.load(container_id)
        if lifecycle.status(stored, store.directory(container_id)) == "stopped":
            raise not_running(container_id)
        if stored.cgroup is None:
            raise OciError(f"container {container_id!r} has no cgroup to update")
        _apply(stored.cgroup, resources)
    return 0


def _read(source: str | None) -> dict[str, Any]:
    return {} if source is None else read_json_object(source, "--resources", "a LinuxResources")


def _with_flags(resources: dict[str, Any], args: Mapping[str, Any]) -> dict[str, Any]:
    merged = {
        key: dict(value) if isinstance(value, dict) else value for key, value in resources.items()
    }
    for dest, section, key in FLAGS:
        if args.get(dest) is not None:
            merged.setdefault(section, {})[key] = args[dest]
    return merged


def _refuse_unknown(resources: Mapping[str, Any]) -> None:
    for section, value in resources.items():
        if value in (None, {}, []):
            continue
        known = UNDERSTOOD.get(section)
        if known is None or not isinstance(value, dict):
            raise OciError(f"update: resources.{section} cannot be updated by sandman-oci")
        for key, item in value.items():
            if key not in known and item not in (None, 0, ""):
                raise OciError(
                    f"update: resources.{section}.{key} cannot be updated by sandman-oci"
                )


def _apply(cgroup: str, resources: Mapping[str, Any]) -> None:
    driver = cgroups.driver(cgroup)
    limits, keys = cgroups.updated_limits(resources)
    swap = _swap(resources)
    cpu = cgroups.cpu_settings(resources)
    if swap is not None:
        keys.discard("memory_max")  # set_swap writes it, in the order the kernel takes the two
    try:
        warnings = driver.set_swap(cgroup, *swap) if swap is not None else []
        warnings += driver.set_limits(cgroup, limits, only=keys) if keys else []
        if cpu is not None:
            warnings += driver.set_cpu(cgroup, cpu)
    except OSError as exc:
        raise OciError(f"update: {exc}") from None
    if warnings:
        raise OciError("update: " + "; ".join(warnings))


def _swap(resources: Mapping[str, Any]) -> tuple[int, int | None] | None:
    """memory.swap (memory plus swap; -1: no limit) with the memory limit it goes with."""
    memory = resources.get("memory") or {}
    swap, limit = int(memory.get("swap") or 0), int(memory.get("limit") or 0)
    if swap == 0:
        return None
    if limit <= 0:
        raise OciError("update: resources.memory.swap needs resources.memory.limit beside it")
    if 0 < swap < limit:
        raise OciError(
            f"update: resources.memory.swap ({swap}) is below resources.memory.limit ({limit}):"
            " it limits memory plus swap"
        )
    return limit, (None if swap < 0 else swap)
