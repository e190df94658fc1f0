"""The cgroup v2 driver: one tree under the cgroup2 mount (or under a delegated cgroup).

Limits map onto the unified files one to one; the unit's units are the kernel's except cpu_max:

    memory_max   memory.max    bytes, "max" for none
    memory_high  memory.high   bytes, "max" for none (the throttling threshold)
    cpu_max      cpu.max       "QUOTA 100000": quota = percent * 1000 us per 100 ms; "max 100000"
    cpu_weight   cpu.weight    1..10000, none = the default 100
    pids_max     pids.max      count, "max" for none
    io_weight    io.weight     "default N", 1..10000, none = the default 100
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import Callable, Collection, Sequence
from typing import Literal

from sandman.kernel import cgroup_common as common
from sandman.kernel.cgroup_common import (
    CPU_PERIOD_US,
    LIMIT_KEYS,
    WEIGHT_DEFAULT,
    LimitValue,
    LimitValues,
    Pressure,
    Usage,
)

# Controllers sandman's limits need, enabled in cgroup.subtree_control down to each cgroup.
V2_CONTROLLERS = ("cpu", "io", "memory", "pids")


# --- conversions (pure) ------------------------------------------------------------------------


def max_or_int(text: str) -> int | None:
    word = text.split(maxsplit=1)[0]
    return None if word == "max" else int(word)


def format_cpu_max(percent: float | None) -> str:
    if percent is None:
        return f"max {CPU_PERIOD_US}"
    return f"{common.percent_to_quota(percent)} {CPU_PERIOD_US}"


def parse_cpu_max(text: str) -> float | None:
    quota, period = text.split()[:2]
    return None if quota == "max" else common.quota_to_percent(int(quota), int(period))


def oci_shares_to_weight(shares: int) -> int:
    """An OCI config's cpu.shares (2..262144) as cpu.weight (1..10000), by the linear map runc
    uses, since the engines compute shares for runc: 2 -> 1, 1024 -> 39, 262144 -> 10000.
    sandman's own cpu_weight keys never pass here (see weight_to_shares for theirs)."""
    shares = min(max(shares, 2), 262144)
    return 1 + (shares - 2) * 9999 // 262142


def _cpu_max_text(quota: int | None, period: int | None) -> str:
    """cpu.max as runc writes it: `max` for no quota; a period only when one is given (the
    kernel keeps the current one for `QUOTA` alone)."""
    text = "max" if quota is None or quota <= 0 else str(quota)
    return text if period is None else f"{text} {period}"


def parse_io_weight(text: str) -> int:
    """io.weight reads `default N` then per-device `MAJ:MIN N` lines; the default is the key's."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "default":
            return int(parts[1])
    return int(text.rsplit(maxsplit=1)[-1])


def _limit(value: LimitValue) -> str:
    return "max" if value is None else str(value)


def _weight(value: LimitValue) -> str:
    return str(WEIGHT_DEFAULT if value is None else value)


# key: (file, controller, to file text, from file text)
V2_FILES: dict[str, tuple[str, str, Callable[[LimitValue], str], Callable[[str], LimitValue]]] = {
    "memory_max": ("memory.max", "memory", _limit, max_or_int),
    "memory_high": ("memory.high", "memory", _limit, max_or_int),
    "cpu_max": ("cpu.max", "cpu", format_cpu_max, parse_cpu_max),
    "cpu_weight": ("cpu.weight", "cpu", _weight, lambda t: int(t.split()[0])),
    "pids_max": ("pids.max", "pids", _limit, max_or_int),
    "io_weight": ("io.weight", "io", lambda v: f"default {_weight(v)}", parse_io_weight),
}


def v2_stored(limits: LimitValues, page: int) -> LimitValues:
    """What read_limits returns once set_limits wrote `limits`: memory in whole pages, cpu_max in
    whole microseconds of quota, an absent weight as the default 100."""
    cpu = limits["cpu_max"]
    return common.stored_byte_limits(limits, page) | {
        "cpu_max": common.stored_percent(cpu),
        "cpu_weight": WEIGHT_DEFAULT if limits["cpu_weight"] is None else limits["cpu_weight"],
        "io_weight": WEIGHT_DEFAULT if limits["io_weight"] is None else limits["io_weight"],
    }


# --- the driver --------------------------------------------------------------------------------


def _refuse_below_use(top: str, limit: common.LimitValue) -> None:
    """v1 refuses a memory limit below what the cgroup uses once reclaim has failed (EBUSY); v2
    takes it, and where nothing can be reclaimed (tmpfs without swap) its OOM killer ends the
    sandbox's processes. A lowered limit must not cost the running sandbox, so v2 gets v1's rule:
    reclaim the excess first (memory.reclaim, Linux 5.19), and refuse if the cgroup still uses
    more than the limit."""
    if limit is None:
        return
    excess = _memory_current(top) - int(limit)
    if excess <= 0:
        return
    # EAGAIN: less than asked could be reclaimed; ENOENT: a kernel before 5.19. Either way the
    # check below decides.
    with contextlib.suppress(OSError):
        common.write(f"{top}/memory.reclaim", str(excess))
    if _memory_current(top) > int(limit):
        raise OSError(errno.EBUSY, os.strerror(errno.EBUSY), f"{top}/memory.max")


def _memory_current(top: str) -> int:
    text = common.read_optional(f"{top}/memory.current")
    return 0 if text is None else int(text)


# What the owner of a delegated cgroup may write (the directory itself: making children).
DELEGATED_FILES = ("cgroup.procs", "cgroup.threads", "cgroup.subtree_control")
# Where `exec` puts what it runs in such a tree: no unit name has a dot, no systemd unit this name.
ENTERED_LEAF = "sandman.exec"


class V2Driver:
    """cgroup v2. `base` is the instance's top cgroup relative to `root` (`sandman`), or a cgroup
    systemd delegated to the service. Every `rel` argument must be `base` or below it."""

    version: Literal[1, 2] = 2
    named: tuple[str, ...] = ()  # v2 is one hierarchy: none beside it

    def __init__(self, root: str = "/sys/fs/cgroup", base: str = common.DEFAULT_BASE) -> None:
        self.root = os.path.normpath(root)
        self.base = common.check_base(base)
        self._page = common.page_size()

    def path(self, slice_path: Sequence[str] = (), name: str | None = None) -> str:
        return common.join_path(self.base, slice_path, name)

    def _dir(self, rel: str) -> str:
        return os.path.join(self.root, common.check_rel(self.base, rel))

    def locations(self, rel: str) -> list[str]:
        return [self._dir(rel)]

    def _existing(self, rel: str) -> str:
        top = self._dir(rel)
        common.require_dirs([top])
        return top

    def create(self, rel: str) -> list[str]:
        """mkdir -p, then enable V2_CONTROLLERS (those offered in cgroup.controllers) in
        cgroup.subtree_control of each cgroup down to rel's parent; rel's own stays empty, as a
        cgroup with controllers enabled for its children may not hold processes. Idempotent:
        writes only controllers not yet enabled. Returns warnings for those it could not enable.

        The walk starts at the root when the base sits right under it (`sandman`), and at the
        base itself when the base is a delegated cgroup (`system.slice/sandman.service`): the
        cgroups above a delegated one belong to systemd, which enabled what it delegates.
        """
        os.makedirs(self._dir(rel), exist_ok=True)
        return self._enable_down_to(rel, V2_CONTROLLERS)

    def _enable_down_to(self, rel: str, controllers: Sequence[str]) -> list[str]:
        parts = common.check_rel(self.base, rel).split("/")
        base_depth = len(self.base.split("/"))
        first = 0 if base_depth == 1 else base_depth
        warnings = []
        for depth in range(first, len(parts)):
            warnings += self._enable(os.path.join(self.root, *parts[:depth]), controllers)
        return warnings

    def _enable(self, directory: str, controllers: Sequence[str]) -> list[str]:
        available = (common.read_optional(f"{directory}/cgroup.controllers") or "").split()
        control = f"{directory}/cgroup.subtree_control"
        enabled = (common.read_optional(control) or "").split()
        missing = [c for c in controllers if c in available and c not in enabled]
        if not missing:
            return []
        try:
            common.write(control, " ".join(f"+{c}" for c in missing))
            return []
        except OSError:
            pass
        warnings = []
        for controller in missing:  # one at a time, so one refusal does not cost the others
            try:
                common.write(control, f"+{controller}")
            except OSError as exc:
                warnings.append(f"could not enable the {controller} controller: {exc}")
        return warnings

    def join(self, rel: str, pid: int) -> None:
        common.write(f"{self._dir(rel)}/cgroup.procs", str(pid))

    def join_entering(self, rel: str, pid: int) -> None:
        """Join rel, or, where rel may hold no process (EBUSY: a booted init of a delegated
        tree enabled controllers for its children), a leaf of sandman's own below it."""
        try:
            self.join(rel, pid)
        except OSError as exc:
            if exc.errno != errno.EBUSY:
                raise
            leaf = os.path.join(self._dir(rel), ENTERED_LEAF)
            os.makedirs(leaf, exist_ok=True)
            common.write(f"{leaf}/cgroup.procs", str(pid))

    def birth_dir(self, rel: str) -> str | None:
        """The cgroup's one directory: a process can be born in it (CLONE_INTO_CGROUP)."""
        return self._dir(rel)

    def pids(self, rel: str) -> list[int]:
        """Every process in rel and its children, sorted."""
        return common.subtree_procs([self._dir(rel)])

    def exists(self, rel: str) -> bool:
        return os.path.isdir(self._dir(rel))

    def kill(self, rel: str, timeout: float = 5.0) -> bool:
        """SIGKILL every process of the subtree: `cgroup.kill` (Linux 5.14) when present, else
        freeze, kill each, thaw. True when the subtree is empty within `timeout` seconds."""
        top = self._dir(rel)

        def strike(deadline: float) -> None:
            if os.path.exists(f"{top}/cgroup.kill"):
                common.write(f"{top}/cgroup.kill", "1")
                return
            freeze = f"{top}/cgroup.freeze"
            if not os.path.exists(freeze):
                common.sigkill(common.subtree_procs([top]))
                return
            common.write(freeze, "1")
            try:
                common.wait_until(lambda: _frozen(top), min(deadline, time.monotonic() + 1))
                common.sigkill(common.subtree_procs([top]))
            finally:
                common.write(freeze, "0")

        return common.kill_loop([top], timeout, strike)

    def freeze(self, rel: str, frozen: bool, timeout: float = 5.0) -> None:
        """Freeze (or thaw) rel's subtree (cgroup.freeze) and wait until cgroup.events says so."""
        top = self._existing(rel)
        common.write(f"{top}/cgroup.freeze", "1" if frozen else "0")
        if not common.wait_until(lambda: _frozen(top) == frozen, time.monotonic() + timeout):
            raise TimeoutError(110, "the cgroup did not change its frozen state", top)

    def is_frozen(self, rel: str) -> bool:
        return _frozen(self._dir(rel))

    def remove(self, rel: str, timeout: float = 2.0) -> None:
        common.rmdir_tree(self._dir(rel), time.monotonic() + timeout)

    def delegate(self, rel: str, uid: int, gid: int) -> list[str]:
        """The files the kernel's cgroup-v2 documentation ("Delegation Containment") lists as
        what a delegatee writes; every limit file stays root's, so the owner cannot raise them."""
        top = self._existing(rel)
        for path in (top, *(os.path.join(top, name) for name in DELEGATED_FILES)):
            os.chown(path, uid, gid, follow_symlinks=False)
        return []

    def restrict_devices(self, rel: str, allowed: Sequence[str]) -> list[str]:
        """Attach an eBPF device program to the cgroup that allows only the `allowed` rules and
        refuses every other device (to mknod and to open), whatever the process's capabilities:
        v2's devices.allow/devices.deny (see device_filter, imported here: status and a no-op
        apply never attach one)."""
        from sandman.kernel import device_filter

        device_filter.attach(self._existing(rel), allowed)
        return []

    def device_programs(self, rel: str) -> list[int]:
        """The ids of the device programs attached to the cgroup itself: [] is no filter."""
        from sandman.kernel import device_filter

        return device_filter.attached(self._existing(rel))

    def set_limits(
        self, rel: str, limits: common.CgroupLimits, only: Collection[str] | None = None
    ) -> list[str]:
        """Write every key (an absent key resets the file to no limit or the default weight),
        or the keys in `only`. Returns one warning per key asked for whose file this cgroup
        lacks."""
        top = self._existing(rel)
        values = common.limits_dict(limits)
        keys = [key for key in LIMIT_KEYS if only is None or key in only]
        warnings = common.quota_warning(_float(values["cpu_max"]) if "cpu_max" in keys else None)
        for key in keys:
            file, controller, to_text, _ = V2_FILES[key]
            path = f"{top}/{file}"
            if not os.path.exists(path):
                if values[key] is not None:
                    warnings.append(
                        f"{key} = {values[key]} not applied: {path} is missing (the {controller} "
                        "controller is not available to this cgroup)"
                    )
                continue
            with common.limit_key(key):
                if key == "memory_max":
                    _refuse_below_use(top, values[key])
                common.write(path, to_text(values[key]))
        return warnings

    def set_cpu(self, rel: str, cpu: common.CpuSettings) -> list[str]:
        """Write the CPU settings given (None leaves a file as it is): cpu.weight from the
        shares (oci_shares_to_weight), cpu.max, and cpuset.cpus and cpuset.mems once the cpuset
        controller is enabled down to rel. One warning per setting this cgroup cannot take."""
        top = self._existing(rel)
        warnings = []
        if cpu.shares is not None:
            warnings += _write_if_present(
                f"{top}/cpu.weight", str(oci_shares_to_weight(cpu.shares)), "cpu"
            )
        if cpu.quota_us is not None or cpu.period_us is not None:
            warnings += _write_if_present(
                f"{top}/cpu.max", _cpu_max_text(cpu.quota_us, cpu.period_us), "cpu"
            )
        cpuset = (("cpuset.cpus", cpu.cpus), ("cpuset.mems", cpu.mems))
        if any(value is not None for _, value in cpuset):
            warnings += self._enable_down_to(rel, ("cpuset",))
            for file, value in cpuset:
                if value is not None:
                    warnings += _write_if_present(f"{top}/{file}", value, "cpuset")
        return warnings

    def set_swap(self, rel: str, memory_max: int, memory_and_swap: int | None) -> list[str]:
        """The memory limit with a limit of memory plus swap (None: no swap limit), as v2 keeps
        them apart: memory.max and memory.swap.max, the swap alone (runc's conversion)."""
        top = self._existing(rel)
        swap = "max" if memory_and_swap is None else str(memory_and_swap - memory_max)
        warnings = _write_if_present(f"{top}/memory.swap.max", swap, "memory")
        _refuse_below_use(top, memory_max)
        common.write(f"{top}/memory.max", str(memory_max))
        return warnings

    def read_limits(self, rel: str) -> LimitValues:
        """The limits in the unit's units; a key whose file is missing is left out."""
        top = self._existing(rel)
        result: LimitValues = {}
        for key in LIMIT_KEYS:
            file, _, _, from_text = V2_FILES[key]
            text = common.read_optional(f"{top}/{file}")
            if text is not None:
                result[key] = from_text(text)
        return result

    def expected_limits(self, rel: str, limits: common.CgroupLimits) -> LimitValues:
        """What read_limits(rel) returns after set_limits(rel, limits): compare the two for drift
        (the unit's own values can differ by rounding to pages and microseconds)."""
        top = self._existing(rel)
        stored = v2_stored(common.limits_dict(limits), self._page)
        return {k: v for k, v in stored.items() if os.path.exists(f"{top}/{V2_FILES[k][0]}")}

    def usage(self, rel: str) -> Usage:
        top = self._existing(rel)
        cpu = common.keyed(common.read_optional(f"{top}/cpu.stat") or "")
        events = common.read_optional(f"{top}/memory.events")
        return {
            "memory_current": common.read_int(f"{top}/memory.current"),
            "memory_peak": common.read_int(f"{top}/memory.peak"),
            "cpu_usec": cpu.get("usage_usec"),
            "pids_current": common.read_int(f"{top}/pids.current"),
            "oom_kills": None if events is None else common.keyed(events).get("oom_kill", 0),
            "nr_throttled": cpu.get("nr_throttled"),
        }

    def pressure(self, rel: str) -> Pressure:
        """The avg10 of cpu.pressure (some), memory.pressure and io.pressure (some and full):
        core files of every non-root cgroup since Linux 4.20, whatever controllers are enabled;
        None for those the kernel does not offer (see read_pressure)."""
        top = self._existing(rel)
        cpu, memory, io = (
            common.read_pressure(f"{top}/{name}.pressure") for name in ("cpu", "memory", "io")
        )
        return Pressure(
            cpu_some_avg10=_avg10(cpu, "some"),
            memory_some_avg10=_avg10(memory, "some"),
            memory_full_avg10=_avg10(memory, "full"),
            io_some_avg10=_avg10(io, "some"),
            io_full_avg10=_avg10(io, "full"),
        )

    def io_usage(self, rel: str) -> Usage:
        text = common.read_optional(f"{self._existing(rel)}/io.stat")
        if text is None:  # the io controller is not enabled here
            return {"io_read_bytes": None, "io_write_bytes": None}
        return parse_io_stat(text)


def parse_io_stat(text: str) -> Usage:
    """io.stat (`MAJ:MIN rbytes=N wbytes=N ...` lines) summed over the devices."""
    totals = {"rbytes": 0, "wbytes": 0}
    for line in text.splitlines():
        for field in line.split()[1:]:
            key, _, value = field.partition("=")
            if key in totals and value.isdigit():
                totals[key] += int(value)
    return {"io_read_bytes": totals["rbytes"], "io_write_bytes": totals["wbytes"]}


def _avg10(stalls: dict[str, common.Stall], kind: str) -> float | None:
    stall = stalls.get(kind)
    return None if stall is None else stall.avg10


def _write_if_present(path: str, value: str, controller: str) -> list[str]:
    if not os.path.exists(path):
        return [
            f"{value} not written: {path} is missing (the {controller} controller is not "
            "available to this cgroup)"
        ]
    common.write(path, value)
    return []


def _frozen(top: str) -> bool:
    return common.keyed(common.read_optional(f"{top}/cgroup.events") or "").get("frozen", 1) == 1


def _float(value: LimitValue) -> float | None:
    return None if value is None else float(value)
