"""The cgroup v1 driver: the same relative path under each controller's hierarchy.

Used on pure v1 hosts and on hybrid ones (controllers in v1, an empty cgroup2 at `unified/`).

    memory_max   memory.limit_in_bytes       bytes, -1 for none
    memory_high  memory.soft_limit_in_bytes  bytes, -1 for none. v1 has no throttling threshold
                 like v2's memory.high; the soft limit (what reclaim pushes the group back to
                 under global memory pressure) is the nearest thing.
    cpu_max      cpu.cfs_quota_us with cpu.cfs_period_us = 100000, -1 for none. Unlike v2, v1
                 refuses (EINVAL) a quota above the parent's, e.g. a sandbox at 100% in a 50% slice.
    cpu_weight   cpu.shares = weight_to_shares(weight), none = 1024 (see there)
    pids_max     pids.max, "max" for none
    io_weight    blkio.weight (CFQ, 10..1000, default 500) or, on kernels since 5.0 that dropped
                 CFQ, blkio.bfq.weight (BFQ, 1..1000, default 100); see io_weight_to_blkio. A
                 weight only acts on disks whose I/O scheduler is that one.
"""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
import errno
import os
import time
from collections.abc import Collection, Sequence
from typing import Literal, NamedTuple

from sandman.kernel import cgroup_common as common
from sandman.kernel.cgroup_common import (
    CPU_PERIOD_US,
    WEIGHT_DEFAULT,
    WEIGHT_MAX,
    WEIGHT_MIN,
    LimitValue,
    LimitValues,
    Pressure,
    Usage,
)

V1_CONTROLLERS = ("memory", "cpu", "cpuacct", "pids", "blkio", "freezer", "devices")
# Hierarchies with no controller that track processes alone: systemd's own (`name=systemd`, at
# `systemd/`) and a hybrid host's cgroup2 (`unified/`). A sandbox has its cgroup there too (as
# runc joins every hierarchy of /proc/self/cgroup), so its cgroup namespace is rooted at its own
# cgroup in them, and a booted systemd makes its tree there (nspawn's legacy and hybrid modes).
NAMED_HIERARCHIES = ("systemd", "unified")
# What the owner of a delegated cgroup writes, per named hierarchy (systemd's cg_set_access:
# its legacy files, and cgroup-v2.rst "Delegation" for cgroup2); the directory itself too.
DELEGATED_FILES = {
    "systemd": ("cgroup.procs", "tasks", "cgroup.clone_children"),
    "unified": ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control"),
}
SHARES_MIN, SHARES_DEFAULT, SHARES_MAX = 2, 1024, 262_144


# --- conversions (pure) ------------------------------------------------------------------------


def _div_round(numerator: int, denominator: int) -> int:
    """numerator / denominator rounded half up, in integers (both non-negative)."""
    return (2 * numerator + denominator) // (2 * denominator)


def weight_to_shares(weight: int) -> int:
    """cpu.weight (1..10000, default 100) to cpu.shares (2..262144, default 1024): proportional,
    shares = weight * 1024 / 100, as systemd does.

    Both files are relative weights: only the ratio between sibling groups matters. A
    proportional map keeps every ratio (200 vs 100 stays 2:1) and maps default to default, so
    a sandbox at the default weight competes as an equal with the host's other groups, which sit
    at 1024. crun's affine map (shares 2..262144 onto weight 1..10000) keeps the ends instead but
    turns the default 1024 into weight 39 and bends every ratio. 1..10000 lands on 10..102400,
    inside the shares range, so nothing is clamped and the map is one to one.
    """
    return min(SHARES_MAX, max(SHARES_MIN, _div_round(weight * SHARES_DEFAULT, WEIGHT_DEFAULT)))


def shares_to_weight(shares: int) -> int:
    """The inverse: shares_to_weight(weight_to_shares(w)) == w for every weight; shares written
    by hand (e.g. 3) round to the nearest weight, clamped to 1..10000."""
    weight = _div_round(max(shares, 0) * WEIGHT_DEFAULT, SHARES_DEFAULT)
    return min(WEIGHT_MAX, max(WEIGHT_MIN, weight))


class BlkioScale(NamedTuple):
    file: str
    low: int
    default: int
    high: int


CFQ = BlkioScale("blkio.weight", 10, 500, 1000)
BFQ = BlkioScale("blkio.bfq.weight", 1, 100, 1000)


def io_weight_to_blkio(weight: int, scale: BlkioScale) -> int:
    """io.weight (1..10000, default 100) to a v1 blkio weight: linear from the lowest weight to the
    default, and linear from the default to the highest (each end onto each end, default onto
    default). One straight line from 1..10000 onto 10..1000 would put the default 100 at 20,
    a 25th of the host's groups at CFQ's 500: a sandbox that asked for nothing would starve. A
    pure ratio (weight * 5) would clamp every weight over 200 to 1000."""
    weight = min(WEIGHT_MAX, max(WEIGHT_MIN, weight))
    if weight <= WEIGHT_DEFAULT:
        span = scale.default - scale.low
        return scale.low + _div_round((weight - WEIGHT_MIN) * span, WEIGHT_DEFAULT - WEIGHT_MIN)
    span = scale.high - scale.default
    return scale.default + _div_round((weight - WEIGHT_DEFAULT) * span, WEIGHT_MAX - WEIGHT_DEFAULT)


def blkio_to_io_weight(value: int, scale: BlkioScale) -> int:
    """The inverse of io_weight_to_blkio, to the nearest weight. Above the default, 9900 weights
    share 500 (CFQ) or 900 (BFQ) values, so a weight reads back as the first one of its value;
    io_weight_to_blkio of what this returns is always the value read (no drift flapping)."""
    value = min(scale.high, max(scale.low, value))
    if value <= scale.default:
        span = scale.default - scale.low
        return WEIGHT_MIN + _div_round((value - scale.low) * (WEIGHT_DEFAULT - WEIGHT_MIN), span)
    span = scale.high - scale.default
    return WEIGHT_DEFAULT + _div_round(
        (value - scale.default) * (WEIGHT_MAX - WEIGHT_DEFAULT), span
    )


def memory_unlimited(page: int) -> int:
    """What v1 shows for "no limit": PAGE_COUNTER_MAX pages, i.e. LONG_MAX rounded to pages."""
    return (2**63 - 1) // page * page


def parse_v1_bytes(text: str, page: int) -> int | None:
    value = int(text.split(maxsplit=1)[0])
    return None if value < 0 or value >= memory_unlimited(page) else value


def parse_blkio(text: str) -> int:
    """`500`, or `default 100` as some kernels print BFQ's weight."""
    parts = text.split()
    return int(parts[1] if parts[0] == "default" else parts[0])


def v1_stored(limits: LimitValues, page: int, scale: BlkioScale) -> LimitValues:
    """What read_limits returns once set_limits wrote `limits` (see v2_stored), through the
    shares and blkio mappings and back."""
    cpu_weight = limits["cpu_weight"]
    io_weight = limits["io_weight"]
    shares = weight_to_shares(WEIGHT_DEFAULT if cpu_weight is None else int(cpu_weight))
    blkio = io_weight_to_blkio(WEIGHT_DEFAULT if io_weight is None else int(io_weight), scale)
    return common.stored_byte_limits(limits, page) | {
        "cpu_max": common.stored_percent(_float(limits["cpu_max"])),
        "cpu_weight": shares_to_weight(shares),
        "io_weight": blkio_to_io_weight(blkio, scale),
    }


def _float(value: LimitValue) -> float | None:
    return None if value is None else float(value)


# --- the driver --------------------------------------------------------------------------------

# key: (controller, file); the io file is whichever of CFQ's and BFQ's the cgroup has
_FILES = {
    "memory_max": ("memory", "memory.limit_in_bytes"),
    "memory_high": ("memory", "memory.soft_limit_in_bytes"),
    "cpu_max": ("cpu", "cpu.cfs_quota_us"),
    "cpu_weight": ("cpu", "cpu.shares"),
    "pids_max": ("pids", "pids.max"),
    "io_weight": ("blkio", CFQ.file),
}


class V1Driver:
    """cgroup v1: `root/CONTROLLER/rel` for each controller mounted at `root/CONTROLLER`
    (co-mounted ones such as `cpu,cpuacct` count once). Every `rel` must be `base` or below it.

    cpuset is left out by default; when asked for, create() copies cpuset.cpus and cpuset.mems
    from the parent into each new cgroup, without which no process could join it."""

    version: Literal[1, 2] = 1

    def __init__(
        self,
        root: str = "/sys/fs/cgroup",
        base: str = common.DEFAULT_BASE,
        controllers: Sequence[str] = V1_CONTROLLERS,
    ) -> None:
        self.root = os.path.normpath(root)
        self.base = common.check_base(base)
        self.controllers = tuple(controllers)
        self.hierarchies = {
            c: os.path.realpath(os.path.join(self.root, common.check_component(c)))
            for c in self.controllers
            if os.path.isdir(os.path.join(self.root, c))
        }
        self.named = tuple(
            name for name in NAMED_HIERARCHIES if os.path.isdir(os.path.join(self.root, name))
        )
        tops = [*self.hierarchies.values(), *(os.path.join(self.root, n) for n in self.named)]
        self._tops = list(dict.fromkeys(tops))
        self._page = common.page_size()
        self._files: dict[tuple[str, str], bool] = {}
        self._rels: dict[str, str] = {}

    def path(self, slice_path: Sequence[str] = (), name: str | None = None) -> str:
        return common.join_path(self.base, slice_path, name)

    def _dirs(self, rel: str) -> list[str]:
        rel = self._checked(rel)
        return [os.path.join(top, rel) for top in self._tops]

    def _checked(self, rel: str) -> str:
        """check_rel, once per rel: observe asks for a dozen files of each sandbox's cgroup."""
        checked = self._rels.get(rel)
        if checked is None:
            checked = self._rels[rel] = common.check_rel(self.base, rel)
        return checked

    def locations(self, rel: str) -> list[str]:
        return self._dirs(rel)

    def _dir(self, controller: str, rel: str) -> str | None:
        top = self.hierarchies.get(controller)
        return None if top is None else f"{top}/{self._checked(rel)}"

    def create(self, rel: str) -> list[str]:
        """mkdir -p in every hierarchy; idempotent. Warns about controllers not mounted."""
        warnings = [
            f"the {c} controller is not mounted at {os.path.join(self.root, c)}"
            for c in self.controllers
            if c not in self.hierarchies
        ]
        if not self._tops:
            raise FileNotFoundError(2, "no cgroup v1 controller is mounted", self.root)
        for directory in self._dirs(rel):
            os.makedirs(directory, exist_ok=True)
        if "cpuset" in self.hierarchies:
            self._fill_cpuset(common.check_rel(self.base, rel))
        return warnings

    def _fill_cpuset(self, rel: str) -> None:
        parent = self.hierarchies["cpuset"]
        for part in rel.split("/"):
            child = os.path.join(parent, part)
            for file in ("cpuset.cpus", "cpuset.mems"):
                if not common.read(f"{child}/{file}").strip():
                    common.write(f"{child}/{file}", common.read(f"{parent}/{file}").strip())
            parent = child

    def delegate(self, rel: str, uid: int, gid: int) -> list[str]:
        """Give rel to UID:GID in the named hierarchies (what systemd inside writes: making
        children, moving processes), as nspawn does; the controllers' cgroups, with the limits,
        stay root's. A host with neither named hierarchy has nothing to delegate."""
        if not self.named:
            return [
                f"cgroup v1: no name=systemd hierarchy at {self.root}/systemd: no cgroup tree "
                "is delegated to the sandbox (a booted systemd needs one)"
            ]
        for name in self.named:
            top = os.path.join(self.root, name, self._checked(rel))
            common.require_dirs([top])
            for path in (top, *(os.path.join(top, f) for f in DELEGATED_FILES[name])):
                if path == top or os.path.exists(path):
                    os.chown(path, uid, gid, follow_symlinks=False)
        return []

    def restrict_devices(self, rel: str, allowed: Sequence[str]) -> list[str]:
        """Deny every device, then allow the listed ones: a process of the sandbox cannot use a
        device node it finds or makes, whatever its capabilities."""
        directory = self._dir("devices", rel)
        if directory is None:
            return ["the devices controller is not mounted: device nodes are not restricted"]
        common.write(f"{directory}/devices.deny", "a")
        for rule in allowed:
            common.write(f"{directory}/devices.allow", rule)
        return []

    def join_entering(self, rel: str, pid: int) -> None:
        """As join: v1 has no rule against processes beside child cgroups."""
        self.join(rel, pid)

    def join(self, rel: str, pid: int) -> None:
        for directory in self._dirs(rel):
            common.write(f"{directory}/cgroup.procs", str(pid))

    def birth_dir(self, rel: str) -> str | None:
        """None: clone3 places a child in a cgroup of the v2 hierarchy alone, and rel lives in
        one directory per v1 hierarchy, each joined by a write to its cgroup.procs."""
        return None

    def pids(self, rel: str) -> list[int]:
        """Every process in rel and its children, in any hierarchy, sorted."""
        return common.subtree_procs(self._dirs(rel))

    def exists(self, rel: str) -> bool:
        """True when rel exists in every mounted hierarchy sandman uses."""
        dirs = self._dirs(rel)
        return bool(dirs) and all(os.path.isdir(d) for d in dirs)

    def kill(self, rel: str, timeout: float = 5.0) -> bool:
        """Freeze rel's subtree (freezer.state FROZEN, which holds its children too), SIGKILL each
        process of the subtree in every hierarchy, THAWED, and again until the subtree is empty.
        Frozen tasks die as they thaw. True when empty within `timeout` seconds."""
        dirs = self._dirs(rel)
        freezer = self._dir("freezer", rel)

        def strike(deadline: float) -> None:
            state = None if freezer is None else f"{freezer}/freezer.state"
            if state is None or not os.path.exists(state):
                common.sigkill(common.subtree_procs(dirs))
                return
            common.write(state, "FROZEN")
            try:
                common.wait_until(
                    lambda: common.read(state).strip() == "FROZEN",
                    min(deadline, time.monotonic() + 1),
                )
                common.sigkill(common.subtree_procs(dirs))
            finally:
                common.write(state, "THAWED")

        return common.kill_loop(dirs, timeout, strike)

    def freeze(self, rel: str, frozen: bool, timeout: float = 5.0) -> None:
        """Freeze (or thaw) rel's subtree and wait until the freezer says it is done."""
        directory = self._dir("freezer", rel)
        if directory is None:
            raise FileNotFoundError(2, "the freezer controller is not mounted", self.root)
        state, wanted = f"{directory}/freezer.state", "FROZEN" if frozen else "THAWED"
        common.write(state, wanted)
        if not common.wait_until(
            lambda: common.read(state).strip() == wanted, time.monotonic() + timeout
        ):
            raise TimeoutError(110, f"the cgroup did not become {wanted}", state)

    def is_frozen(self, rel: str) -> bool:
        directory = self._dir("freezer", rel)
        if directory is None:
            return False
        return common.read(f"{directory}/freezer.state").strip() == "FROZEN"

    def remove(self, rel: str, timeout: float = 2.0) -> None:
        deadline = time.monotonic() + timeout
        for directory in self._dirs(rel):
            common.rmdir_tree(directory, deadline)

    def _io_scale(self, rel: str) -> BlkioScale | None:
        directory = self._dir("blkio", rel)
        if directory is None:
            return None
        for scale in (CFQ, BFQ):
            if self._has(directory, "blkio", scale.file):
                return scale
        return None

    def _file(self, key: str, rel: str) -> str | None:
        """The file holding `key` in rel, or None when the cgroups of its hierarchy lack it."""
        controller, file = _FILES[key]
        directory = self._dir(controller, rel)
        if key == "io_weight":
            scale = self._io_scale(rel)
            file = "" if scale is None else scale.file
        if directory is None or not file or not self._has(directory, controller, file):
            return None
        return f"{directory}/{file}"

    def _has(self, directory: str, controller: str, file: str) -> bool:
        """Whether the cgroups of a hierarchy have `file`. The kernel gives every cgroup but the
        root the same files, so one real cgroup answers for all: status and observe read the
        limits of every sandbox, and a stat per file and cgroup cost more than the reads."""
        known = self._files.get((controller, file))
        if known is None:
            known = os.path.exists(f"{directory}/{file}")
            if known or os.path.isdir(directory):
                self._files[(controller, file)] = known
        return known

    def set_limits(
        self, rel: str, limits: common.CgroupLimits, only: Collection[str] | None = None
    ) -> list[str]:
        """Write every key (an absent key resets the file to no limit or the default weight),
        or the keys in `only`. Returns one warning per key asked for this host cannot honour."""
        common.require_dirs(self._dirs(rel))
        values = common.limits_dict(limits)
        if only is not None:
            values = {key: value for key, value in values.items() if key in only}
        warnings = common.quota_warning(_float(values.get("cpu_max")))
        for key, value in values.items():
            path = self._file(key, rel)
            if path is None:
                if value is not None:
                    warnings.append(f"{key} = {value} not applied: {self._why_missing(key, rel)}")
                continue
            with common.limit_key(key):
                self._write_limit(key, value, path, rel)
        return warnings

    def _write_limit(self, key: str, value: common.LimitValue, path: str, rel: str) -> None:
        if key == "cpu_max":
            self._set_cpu_max(path, _float(value))
        elif key == "cpu_weight":
            common.write(path, str(weight_to_shares(_weight(value))))
        elif key == "io_weight":
            scale = self._io_scale(rel)
            assert scale is not None  # _file found its file
            common.write(path, str(io_weight_to_blkio(_weight(value), scale)))
        elif key == "pids_max":
            common.write(path, "max" if value is None else str(value))
        else:
            common.write(path, "-1" if value is None else str(value))

    def set_cpu(self, rel: str, cpu: common.CpuSettings) -> list[str]:
        """Write the CPU settings given (None leaves a file as it is): cpu.shares, the CFS quota
        and period, cpuset.cpus and cpuset.mems (a driver made with the cpuset controller).
        One warning per setting whose controller is not mounted."""
        common.require_dirs(self._dirs(rel))
        warnings = []
        scheduling = (cpu.shares, cpu.quota_us, cpu.period_us)
        cpu_dir = self._dir("cpu", rel)
        if cpu_dir is None and any(value is not None for value in scheduling):
            warnings.append(f"cpu shares, quota and period not applied: {self._unmounted('cpu')}")
        elif cpu_dir is not None:
            if cpu.shares is not None:
                common.write(f"{cpu_dir}/cpu.shares", str(cpu.shares))
            self._set_cfs(cpu_dir, cpu.quota_us, cpu.period_us)
        cpuset_dir = self._dir("cpuset", rel)
        if cpuset_dir is None and (cpu.cpus is not None or cpu.mems is not None):
            warnings.append(f"cpus and mems not applied: {self._unmounted('cpuset')}")
        elif cpuset_dir is not None:
            for file, value in (("cpuset.cpus", cpu.cpus), ("cpuset.mems", cpu.mems)):
                if value is not None:
                    common.write(f"{cpuset_dir}/{file}", value)
        return warnings

    def set_swap(self, rel: str, memory_max: int, memory_and_swap: int | None) -> list[str]:
        """The memory limit with a limit of memory plus swap (None: no swap limit), written in
        the order the kernel accepts: memory.limit_in_bytes may never exceed
        memory.memsw.limit_in_bytes, so the memsw limit goes first when it is raised."""
        directory = self._dir("memory", rel)
        if directory is None:
            return [f"swap not applied: {self._unmounted('memory')}"]
        memsw = f"{directory}/memory.memsw.limit_in_bytes"
        if not os.path.exists(memsw):
            return [
                f"swap not applied: {memsw} is missing (the kernel accounts no swap: swapaccount=1)"
            ]
        limit, total = str(memory_max), "-1" if memory_and_swap is None else str(memory_and_swap)
        current = common.read_int(memsw)
        raising = memory_and_swap is None or current is None or current < memory_max
        for path, value in ((memsw, total), (f"{directory}/memory.limit_in_bytes", limit))[
            :: 1 if raising else -1
        ]:
            common.write(path, value)
        return []

    def _set_cfs(self, directory: str, quota: int | None, period: int | None) -> None:
        quota_path, period_path = f"{directory}/cpu.cfs_quota_us", f"{directory}/cpu.cfs_period_us"
        if period is not None:
            if quota is not None:
                # the kernel checks quota/period at each write: lift the quota, then the period
                common.write(quota_path, "-1")
            common.write(period_path, str(period))
        if quota is not None:
            common.write(quota_path, str(quota if quota > 0 else -1))

    def _unmounted(self, controller: str) -> str:
        if controller in self.controllers:
            return f"the {controller} controller is not mounted at {self.root}/{controller}"
        return f"this driver was made without the {controller} controller"

    def _why_missing(self, key: str, rel: str) -> str:
        controller, file = _FILES[key]
        directory = self._dir(controller, rel)
        if directory is None:
            return f"the {controller} controller is not mounted at {self.root}/{controller}"
        if key == "io_weight":
            return (
                f"{directory} has neither blkio.weight (CFQ) nor blkio.bfq.weight (BFQ): this "
                "kernel has no proportional I/O weight"
            )
        return f"{directory}/{file} is missing"

    def _set_cpu_max(self, quota_path: str, percent: float | None) -> None:
        period_path = os.path.join(os.path.dirname(quota_path), "cpu.cfs_period_us")
        if common.read_int(period_path) != CPU_PERIOD_US:
            # the kernel checks quota/period at each write: lift the quota, then set the period
            common.write(quota_path, "-1")
            common.write(period_path, str(CPU_PERIOD_US))
        quota = -1 if percent is None else common.percent_to_quota(percent)
        try:
            common.write(quota_path, str(quota))
        except OSError as exc:
            if exc.errno != errno.EINVAL or quota < 0:
                raise
            # v1 refuses a quota below one of the children's: lower theirs to it first (the
            # units of the children, checked to fit in their parents, are applied after this).
            self._cap_children(os.path.dirname(quota_path), quota)
            common.write(quota_path, str(quota))

    def _cap_children(self, directory: str, quota: int) -> None:
        for child in common.subtree(directory):  # deepest first: each fits under its parent
            if child == directory:
                continue
            path = os.path.join(child, "cpu.cfs_quota_us")
            current = common.read_int(path)
            if current is not None and current > quota:
                common.write(path, str(quota))

    def read_limits(self, rel: str) -> LimitValues:
        """The limits in the unit's units (bytes, percent, weights); a key whose file is missing
        is left out."""
        result: LimitValues = {}
        for key in _FILES:
            path = self._file(key, rel)
            if path is None:
                continue
            text = common.read_optional(path)
            if text is None:  # a file its hierarchy has: the cgroup itself is missing
                common.require_dirs([os.path.dirname(path)])
                continue
            if key == "cpu_max":
                period = common.read_int(os.path.join(os.path.dirname(path), "cpu.cfs_period_us"))
                result[key] = common.quota_to_percent(int(text), period or CPU_PERIOD_US)
            elif key == "cpu_weight":
                result[key] = shares_to_weight(int(text))
            elif key == "io_weight":
                scale = self._io_scale(rel)
                assert scale is not None
                result[key] = blkio_to_io_weight(parse_blkio(text), scale)
            elif key == "pids_max":
                result[key] = None if text.split()[0] == "max" else int(text)
            else:
                result[key] = parse_v1_bytes(text, self._page)
        if not result:  # nothing read: say which cgroup is missing, if one is
            common.require_dirs(self._dirs(rel))
        return result

    def expected_limits(self, rel: str, limits: common.CgroupLimits) -> LimitValues:
        """What read_limits(rel) returns after set_limits(rel, limits): drift is a difference."""
        common.require_dirs(self._dirs(rel))
        stored = v1_stored(common.limits_dict(limits), self._page, self._io_scale(rel) or CFQ)
        return {k: v for k, v in stored.items() if self._file(k, rel) is not None}

    def usage(self, rel: str) -> Usage:
        memory = self._dir("memory", rel)
        cpu = self._dir("cpu", rel)
        cpuacct = self._dir("cpuacct", rel)
        pids = self._dir("pids", rel)
        nanoseconds = None if cpuacct is None else common.read_int(f"{cpuacct}/cpuacct.usage")
        oom = None if memory is None else common.read_optional(f"{memory}/memory.oom_control")
        stat = None if cpu is None else common.read_optional(f"{cpu}/cpu.stat")
        usage: Usage = {
            "memory_current": _read(memory, "memory.usage_in_bytes"),
            "memory_peak": _read(memory, "memory.max_usage_in_bytes"),
            "cpu_usec": None if nanoseconds is None else nanoseconds // 1000,
            "pids_current": _read(pids, "pids.current"),
            "oom_kills": None if oom is None else common.keyed(oom).get("oom_kill"),
            "nr_throttled": None if stat is None else common.keyed(stat).get("nr_throttled"),
        }
        if all(value is None for value in usage.values()):  # say which cgroup is missing
            common.require_dirs(self._dirs(rel))
        return usage

    def pressure(self, rel: str) -> Pressure:
        """None for every figure, with no I/O: mainline Linux keeps pressure stall figures per
        cgroup only in cgroup2, and a hybrid host's cgroup2 (`unified/`) holds no cgroup of
        sandman's. A missing cgroup is no error here: pressure decides no drift."""
        return Pressure()

    def io_usage(self, rel: str) -> Usage:
        blkio = self._dir("blkio", rel)
        # The throttle files count every I/O whatever the scheduler; _recursive: the subtree.
        name = "blkio.throttle.io_service_bytes_recursive"
        text = None if blkio is None else common.read_optional(f"{blkio}/{name}")
        if text is None:
            return {"io_read_bytes": None, "io_write_bytes": None}
        return parse_blkio_bytes(text)


def parse_blkio_bytes(text: str) -> Usage:
    """blkio.throttle.io_service_bytes_recursive (`MAJ:MIN Read N` lines) summed per op."""
    read = write = 0
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[2].isdigit():
            read += int(parts[2]) if parts[1] == "Read" else 0
            write += int(parts[2]) if parts[1] == "Write" else 0
    return {"io_read_bytes": read, "io_write_bytes": write}


def _read(directory: str | None, file: str) -> int | None:
    return None if directory is None else common.read_int(f"{directory}/{file}")


def _weight(value: LimitValue) -> int:
    return WEIGHT_DEFAULT if value is None else int(value)
