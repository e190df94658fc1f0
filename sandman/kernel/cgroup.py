"""Cgroups as a small interface: `CgroupDriver`, with a v2 and a v1 implementation.

Learned from crun's `libcrun_cgroup_manager`: one protocol, one driver per cgroup version, the
mode detected once per root, resources mapped onto files by a table with the conversions as pure
functions (in cgroup_v1.py and cgroup_v2.py). Pure cgroup v2 hosts get `V2Driver`; v1 hosts and
hybrid ones (v1 controllers, an empty cgroup2 at `unified/`) get `V1Driver`.

A cgroup is named by a path relative to the cgroup root, `BASE/SLICE.../SANDBOX`: `path()` makes
it from a resolved slice path (which starts at the root slice `sandman`, the base itself).
Every method takes such a `rel` and refuses one outside the driver's base. Errors are `OSError`
with the cgroup file or directory in `filename`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Collection, Sequence
from typing import Literal, Protocol, TypeAlias

from sandman.kernel.cgroup_common import (
    CPU_PERIOD_US,
    CPU_QUOTA_MIN_US,
    DEFAULT_BASE,
    LIMIT_KEYS,
    PRESSURE_KEYS,
    USAGE_KEYS,
    CgroupLimits,
    CpuSettings,
    LimitValues,
    Pressure,
    Stall,
    Usage,
    parse_pressure,
    percent_to_quota,
    quota_to_percent,
    read,
    stored_bytes,
    write,
)
from sandman.kernel.cgroup_v1 import (
    BFQ,
    CFQ,
    V1_CONTROLLERS,
    BlkioScale,
    V1Driver,
    blkio_to_io_weight,
    io_weight_to_blkio,
    shares_to_weight,
    weight_to_shares,
)
from sandman.kernel.cgroup_v2 import (
    V2_CONTROLLERS,
    V2Driver,
    format_cpu_max,
    oci_shares_to_weight,
    parse_cpu_max,
)
from sandman.kernel.mountinfo import unescape

__all__ = [
    "BFQ",
    "CFQ",
    "CPU_PERIOD_US",
    "CPU_QUOTA_MIN_US",
    "DEFAULT_BASE",
    "LIMIT_KEYS",
    "PRESSURE_KEYS",
    "USAGE_KEYS",
    "V1_CONTROLLERS",
    "V2_CONTROLLERS",
    "BlkioScale",
    "CgroupDriver",
    "CgroupLimits",
    "CpuSettings",
    "LimitValues",
    "Mode",
    "Pressure",
    "Stall",
    "Usage",
    "V1Driver",
    "V2Driver",
    "blkio_to_io_weight",
    "clear_mode_cache",
    "detect_mode",
    "driver_for",
    "format_cpu_max",
    "io_weight_to_blkio",
    "mode_from_files",
    "mode_from_mountinfo",
    "oci_shares_to_weight",
    "parse_cpu_max",
    "parse_pressure",
    "percent_to_quota",
    "quota_to_percent",
    "read",
    "shares_to_weight",
    "stored_bytes",
    "weight_to_shares",
    "write",
]

Mode: TypeAlias = Literal["v2", "hybrid", "v1"]
DEFAULT_ROOT = "/sys/fs/cgroup"


class CgroupDriver(Protocol):
    """What the rest of sandman may do with cgroups. `rel` is a path from `path()`."""

    root: str
    base: str
    version: Literal[1, 2]
    # v1: the hierarchies without controllers where the sandbox has its cgroup too and a booted
    # init gets it delegated (`systemd`, a hybrid host's `unified`), mounted inside for it
    named: tuple[str, ...]

    def path(self, slice_path: Sequence[str] = (), name: str | None = None) -> str:
        """`("sandman", "services"), "web"` -> `BASE/services/web`; `()` -> the base."""
        ...

    def create(self, rel: str) -> list[str]:
        """mkdir -p with the controllers sandman needs; idempotent; returns warnings."""
        ...

    def join(self, rel: str, pid: int) -> None: ...

    def join_entering(self, rel: str, pid: int) -> None:
        """Join rel as a process entering a running sandbox (`exec`): where a booted init's
        delegated tree keeps rel from holding processes (v2), a leaf below it instead."""
        ...

    def birth_dir(self, rel: str) -> str | None:
        """The directory a child can be born in (clone3 CLONE_INTO_CGROUP) instead of joining
        rel after its fork: v2's cgroup; None on v1 and hybrid hosts."""
        ...

    def pids(self, rel: str) -> list[int]:
        """Every process in rel and below, sorted."""
        ...

    def kill(self, rel: str, timeout: float = 5.0) -> bool:
        """SIGKILL every process of the subtree, double-forked ones included; True when empty."""
        ...

    def remove(self, rel: str, timeout: float = 2.0) -> None:
        """rmdir the subtree bottom-up; gone is fine; EBUSY retried until `timeout`, then raised."""
        ...

    def exists(self, rel: str) -> bool: ...

    def freeze(self, rel: str, frozen: bool, timeout: float = 5.0) -> None:
        """Freeze or thaw every process of rel's subtree (OCI pause and resume)."""
        ...

    def is_frozen(self, rel: str) -> bool: ...

    def locations(self, rel: str) -> list[str]:
        """The directories of rel in every hierarchy sandman uses, whether they exist or not."""
        ...

    def delegate(self, rel: str, uid: int, gid: int) -> list[str]:
        """Give the cgroup to UID:GID as systemd delegates one (the directory and the files its
        owner manages: making children, moving processes, enabling controllers for them), its
        limits staying root's; returns warnings where the host cannot (cgroup v1)."""
        ...

    def restrict_devices(self, rel: str, allowed: Sequence[str]) -> list[str]:
        """Only the `allowed` device rules ("c 1:3 rwm") may be used from the cgroup; returns
        warnings where the host has no such control."""
        ...

    def set_limits(
        self, rel: str, limits: CgroupLimits, only: Collection[str] | None = None
    ) -> list[str]:
        """Write all six limits, or the keys in `only` (sandman-oci's `update`); returns a
        warning per key asked for that the host cannot honour."""
        ...

    def set_swap(self, rel: str, memory_max: int, memory_and_swap: int | None) -> list[str]:
        """The memory limit with a limit of memory plus swap (None: none), as OCI gives them
        (sandman-oci's `update`); returns a warning when the host accounts no swap."""
        ...

    def set_cpu(self, rel: str, cpu: CpuSettings) -> list[str]:
        """Write an OCI config's CPU settings (shares, CFS quota and period, cpuset); returns
        a warning per setting the host cannot honour."""
        ...

    def read_limits(self, rel: str) -> LimitValues:
        """The limits in the unit's units; keys whose file the cgroup lacks are left out."""
        ...

    def expected_limits(self, rel: str, limits: CgroupLimits) -> LimitValues:
        """What read_limits returns after set_limits(rel, limits): drift is a difference."""
        ...

    def usage(self, rel: str) -> Usage:
        """USAGE_KEYS: memory_current/peak (bytes), cpu_usec, pids_current, oom_kills,
        nr_throttled; None where the host has no such counter."""
        ...

    def pressure(self, rel: str) -> Pressure:
        """PRESSURE_KEYS: the avg10 (percent) of the cgroup's pressure stall files; None where
        the host keeps none (cgroup v1 and hybrid hosts, a kernel with PSI off)."""
        ...

    def io_usage(self, rel: str) -> Usage:
        """io_read_bytes, io_write_bytes over every device since the cgroup was made; None
        where the host keeps no such counter. Apart from usage(): only `top` pays for it."""
        ...


# --- detection ---------------------------------------------------------------------------------

_MODES: dict[str, Mode] = {}


def mode_from_mountinfo(text: str, root: str = DEFAULT_ROOT) -> Mode | None:
    """The mode from /proc/self/mountinfo: cgroup2 at root is v2; anything else at root with a
    cgroup2 at root/unified is hybrid; else v1. None when nothing is mounted at root."""
    mounts = {}
    for line in text.splitlines():
        left, sep, right = line.partition(" - ")
        fields = left.split()
        if sep and len(fields) >= 5 and right.split():
            mounts[unescape(fields[4])] = right.split()[0]  # a later mount hides an earlier one
    root = os.path.normpath(root)
    if root not in mounts:
        return None
    if mounts[root] == "cgroup2":
        return "v2"
    if mounts.get(os.path.join(root, "unified")) == "cgroup2":
        return "hybrid"
    return "v1"


def mode_from_files(root: str = DEFAULT_ROOT) -> Mode:
    """The mode from the tree itself: only a cgroup2 directory has cgroup.controllers."""
    if os.path.isfile(os.path.join(root, "cgroup.controllers")):
        return "v2"
    if os.path.isfile(os.path.join(root, "unified", "cgroup.controllers")):
        return "hybrid"
    return "v1"


def detect_mode(root: str = DEFAULT_ROOT) -> Mode:
    """v2, hybrid or v1 for the cgroup tree at `root`, from mountinfo when root is a mount point,
    else from its files (a tree that is not a mount, as in tests). Cached per root."""
    key = os.path.normpath(root)
    if key not in _MODES:
        try:
            mountinfo = read("/proc/self/mountinfo")
        except OSError:
            mountinfo = ""
        _MODES[key] = mode_from_mountinfo(mountinfo, key) or mode_from_files(key)
    return _MODES[key]


def clear_mode_cache() -> None:
    _MODES.clear()


@functools.lru_cache(maxsize=16)
def driver_for(base: str, root: str = DEFAULT_ROOT, cpuset: bool = False) -> CgroupDriver:
    """The driver for the cgroups under `base` (an instance's: `placement.cgroup_base(tag)`, its
    own tree or a systemd scope): V2Driver on a pure v2 host, V1Driver otherwise.
    One per base and process: making one resolves every hierarchy's path. `cpuset`: v1's cpuset
    hierarchy too (sandman-oci's, as runc joins every hierarchy); v2 enables it when asked."""
    if detect_mode(root) == "v2":
        return V2Driver(root, base)
    return V1Driver(root, base, (*V1_CONTROLLERS, "cpuset") if cpuset else V1_CONTROLLERS)
