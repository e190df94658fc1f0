"""The container's cgroup: linux.cgroupsPath (or `sandman-oci/ID`) through kernel/cgroup.py's
drivers, v1 or v2, with linux.resources' memory and pids limits, CPU settings and device
rules."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import Any

from sandman.kernel.cgroup import CgroupDriver, CgroupLimits, CpuSettings, driver_for


def path_of(config: Mapping[str, Any], container_id: str) -> str:
    """The cgroup relative to the root. The systemd form `slice:prefix:name` (--systemd-cgroup)
    becomes `slice/prefix-name.scope`, made directly in the trees: sandman-oci asks no manager."""
    raw = str(config.get("linux", {}).get("cgroupsPath") or f"{DEFAULT_PARENT}/{container_id}")
    if raw.count(":") == 2 and not raw.startswith("/"):
        slice_name, prefix, name = raw.split(":")
        raw = f"{slice_name or 'system.slice'}/{prefix}-{name}.scope"
    return raw.strip("/")


DEFAULT_PARENT = "sandman-oci"


def remove_default_parent(driver: CgroupDriver, rel: str) -> None:
    """The parent made for configs without a cgroupsPath goes with its last container (an
    rmdir, which the kernel refuses while another container's cgroup is below it)."""
    if rel.startswith(f"{DEFAULT_PARENT}/"):
        for location in driver.locations(DEFAULT_PARENT):
            with contextlib.suppress(OSError):
                os.rmdir(location)


def driver(rel: str) -> CgroupDriver:
    return driver_for(rel.split("/", maxsplit=1)[0], cpuset=True)


def limits(resources: Mapping[str, Any]) -> CgroupLimits:
    memory = (resources.get("memory") or {}).get("limit")
    pids = (resources.get("pids") or {}).get("limit")
    return CgroupLimits(
        memory_max=int(memory) if memory and int(memory) > 0 else None,
        pids_max=int(pids) if pids and int(pids) > 0 else None,
    )


def updated_limits(resources: Mapping[str, Any]) -> tuple[CgroupLimits, set[str]]:
    """`update`'s memory and pids limits and the keys given (a negative limit: none; zero or
    absent: unchanged, as runc reads them)."""
    given: dict[str, int | None] = {}
    for section, key in (("memory", "memory_max"), ("pids", "pids_max")):
        value = (resources.get(section) or {}).get("limit")
        if value:
            given[key] = int(value) if int(value) > 0 else None
    return CgroupLimits(**given), set(given)


CPU_KEYS = ("shares", "quota", "period", "cpus", "mems")


def cpu_settings(resources: Mapping[str, Any]) -> CpuSettings | None:
    """linux.resources.cpu as runc reads it: a zero or absent value is not set; None when
    nothing is. Realtime runtime and period are left to the host (CONFIG_RT_GROUP_SCHED is off
    in the distributions' kernels; runc writes them only when given)."""
    cpu = resources.get("cpu") or {}

    def number(key: str) -> int | None:
        value = cpu.get(key)
        return int(value) if value else None

    def text(key: str) -> str | None:
        value = cpu.get(key)
        return str(value) if value else None

    settings = CpuSettings(
        shares=number("shares"),
        quota_us=number("quota"),
        period_us=number("period"),
        cpus=text("cpus"),
        mems=text("mems"),
    )
    return None if settings == CpuSettings() else settings


def default_devices() -> tuple[str, ...]:
    """What every container may use whatever its config says, as runc and crun allow them: the
    devices the kernel layer binds into /dev (null, zero, full, random, urandom, tty), the
    console, ptmx and the ptys of the container's own devpts. (kernel.rootfs is imported here,
    by create alone: state, kill and delete need none of it.)"""
    from sandman.kernel.rootfs import DEV_RULES

    return (*DEV_RULES, "c 5:1 rwm")


def device_rules(resources: Mapping[str, Any], devices: Any = ()) -> list[str] | None:
    """The allowed devices as `c 1:3 rwm` rules when the config denies all first (what engines
    write), the default devices always among them; None when it gives no device rules (the
    cgroup's devices stay as they are)."""
    entries = resources.get("devices")
    if not entries:
        return None
    allowed: list[str] = list(default_devices())
    for entry in entries:
        kind = entry.get("type") or "a"
        major = "*" if entry.get("major") in (None, -1) else str(entry["major"])
        minor = "*" if entry.get("minor") in (None, -1) else str(entry["minor"])
        rule = f"{kind} {major}:{minor} {entry.get('access') or 'rwm'}"
        if entry.get("allow"):
            allowed.append(rule)
        elif kind == "a":
            allowed = list(default_devices())  # deny all: what came before is void
    # The devices the config makes (linux.devices) may be used, as runc allows them.
    for device in devices or ():
        kind = "c" if device.get("type") == "u" else device.get("type", "c")
        if kind == "p":
            continue  # a FIFO is no device to the cgroup
        allowed.append(f"{kind} {device.get('major', 0)}:{device.get('minor', 0)} rwm")
    return allowed
