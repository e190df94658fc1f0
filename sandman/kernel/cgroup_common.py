"""What both cgroup drivers share: checked paths, file I/O that names the file, subtree walks,
the kill and remove loops, and the conversions that do not depend on the cgroup version.

Plain file I/O only: cgroupfs is files and directories, no ctypes and no helper programs. Every
failure is an `OSError` whose `filename` is the cgroup file or directory that refused.
"""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
import contextlib
import errno
import os
import signal
import time
import typing
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Annotated, NamedTuple, TypeAlias

# A driver's base when none is given (instances pass their own, placement.cgroup_base(tag)).
DEFAULT_BASE = "sandman"

LimitValue: TypeAlias = int | float | None
LimitValues: TypeAlias = dict[str, LimitValue]
Usage: TypeAlias = dict[str, int | None]
# A limit in bytes, which the kernel keeps in whole pages (stored_bytes). A marked int, so that
# BYTE_LIMITS is read off CgroupLimits rather than listed a second time.
Bytes: TypeAlias = Annotated[int, "bytes"]


class CgroupLimits(NamedTuple):
    """The limits the drivers write, in the units' units: bytes, percent of one CPU for cpu_max,
    weights 1..10000, a count of tasks; None is no limit (or the default weight). The kernel's
    own type: apply and observe convert unit models and records into it."""

    memory_max: Bytes | None = None
    memory_high: Bytes | None = None
    cpu_max: float | None = None
    cpu_weight: int | None = None
    pids_max: int | None = None
    io_weight: int | None = None


class CpuSettings(NamedTuple):
    """An OCI config's CPU scheduling (linux.resources.cpu), in the kernel's own units, as the
    engines compute them for runc: cpu.shares on v1's scale (v2 maps it to cpu.weight), the CFS
    quota and period in microseconds (a quota of None or <= 0: no quota), and the CPUs and memory
    nodes of a cpuset as lists (`0-1,3`). None leaves the file as it is."""

    shares: int | None = None
    quota_us: int | None = None
    period_us: int | None = None
    cpus: str | None = None
    mems: str | None = None


LIMIT_KEYS = CgroupLimits._fields
BYTE_LIMITS = tuple(
    key
    for key, hint in typing.get_type_hints(CgroupLimits, include_extras=True).items()
    if Bytes in typing.get_args(hint)
)
USAGE_KEYS = (
    "memory_current",
    "memory_peak",
    "cpu_usec",
    "pids_current",
    "oom_kills",
    "nr_throttled",
)


class Stall(NamedTuple):
    """One line of a PSI file (`some avg10=0.12 avg60=0.05 avg300=0.01 total=4567`): the share
    of wall time, in percent averaged over 10, 60 and 300 s, in which some (or all, `full`)
    runnable tasks of the cgroup waited for the resource, and the total stall in microseconds."""

    avg10: float
    avg60: float
    avg300: float
    total: int


class Pressure(NamedTuple):
    """A cgroup's pressure stall figures as status shows them: each `avg10` in percent, None
    where the host has none (cgroup v1, a kernel with PSI off, or a file it does not offer).
    CPU shows `some` alone: its `full` line exists only since Linux 5.13, and is always zero for
    the host as a whole."""

    cpu_some_avg10: float | None = None
    memory_some_avg10: float | None = None
    memory_full_avg10: float | None = None
    io_some_avg10: float | None = None
    io_full_avg10: float | None = None


PRESSURE_KEYS = Pressure._fields

CPU_PERIOD_US = 100_000
CPU_QUOTA_MIN_US = 1_000  # the kernel refuses a CFS quota under 1 ms (EINVAL)
WEIGHT_MIN, WEIGHT_DEFAULT, WEIGHT_MAX = 1, 100, 10_000  # cpu.weight and io.weight (v2)

_POLL = 0.02  # seconds, the longest pause between two looks at a cgroup that is emptying
_FIRST_POLL = 0.0005  # seconds, the first pause: a killed process is usually gone by then


# --- conversions shared by both versions (pure) ------------------------------------------------


def page_size() -> int:
    return os.sysconf("SC_PAGE_SIZE")


def stored_bytes(value: int | None, page: int) -> int | None:
    """A memory limit as the kernel keeps it: whole pages, rounded down (both versions)."""
    return None if value is None else value - value % page


def stored_byte_limits(limits: LimitValues, page: int) -> LimitValues:
    """LIMITS with each of BYTE_LIMITS as the kernel keeps it (stored_bytes), the others as
    given: the part of v1_stored and v2_stored that does not depend on the version."""
    return {
        key: stored_bytes(None if value is None else int(value), page)
        if key in BYTE_LIMITS
        else value
        for key, value in limits.items()
    }


def percent_to_quota(percent: float, period: int = CPU_PERIOD_US) -> int:
    """CPU percent of one CPU to a CFS quota in microseconds per `period`, at least 1 ms.

    50.0 -> 50000 with the 100 ms period; 0.5 would be 500 us, which the kernel refuses, so it
    becomes 1000 (1%) and set_limits warns.
    """
    return max(CPU_QUOTA_MIN_US, round(percent * period / 100))


def quota_to_percent(quota: int, period: int) -> float | None:
    """The inverse of percent_to_quota for any period; a negative quota (v1's -1) is no limit."""
    if quota < 0 or period <= 0:
        return None
    return quota * 100 / period


def stored_percent(percent: float | None) -> float | None:
    """A cpu_max as read back after it was written: whole microseconds of quota."""
    return None if percent is None else quota_to_percent(percent_to_quota(percent), CPU_PERIOD_US)


def quota_warning(percent: float | None) -> list[str]:
    if percent is None or percent * CPU_PERIOD_US / 100 >= CPU_QUOTA_MIN_US - 0.5:
        return []
    floor = CPU_QUOTA_MIN_US * 100 / CPU_PERIOD_US
    return [
        f"cpu_max = {percent:g}% is below the kernel's smallest CFS quota "
        f"({CPU_QUOTA_MIN_US} us per {CPU_PERIOD_US} us); applied {floor:g}%"
    ]


class LimitError(OSError):
    """The kernel refused one limit: `key` names it (memory_max...), so that the layer above can
    name the unit key it came from."""

    def __init__(self, key: str, cause: OSError) -> None:
        why = cause.strerror or str(cause)
        if cause.errno == errno.EBUSY and key.startswith("memory"):
            why += " (the cgroup already uses more memory than that; raise the limit)"
        super().__init__(cause.errno or 0, f"the kernel refused {key}: {why}", cause.filename)
        self.key = key


@contextlib.contextmanager
def limit_key(key: str) -> Iterator[None]:
    """Errors of writing `key`'s file rise as LimitError(key)."""
    try:
        yield
    except OSError as exc:
        raise LimitError(key, exc) from exc


def limits_dict(limits: CgroupLimits) -> LimitValues:
    return dict(limits._asdict())


def keyed(text: str) -> dict[str, int]:
    """`key value` lines (memory.events, cpu.stat, memory.oom_control) to a dict."""
    result = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("-").isdigit():
            result[parts[0]] = int(parts[1])
    return result


def parse_pressure(text: str) -> dict[str, Stall]:
    """A PSI file (cpu.pressure, memory.pressure, io.pressure) to {"some": Stall, "full": Stall};
    a line that is not `KIND avg10=F avg60=F avg300=F total=N` is left out, so a kernel that
    adds a field or a line does not break status."""
    result = {}
    for line in text.splitlines():
        kind, *fields = line.split() or [""]
        values = {}
        for field in fields:
            key, _, value = field.partition("=")
            values[key] = value
        try:
            result[kind] = Stall(
                float(values["avg10"]),
                float(values["avg60"]),
                float(values["avg300"]),
                int(values["total"]),
            )
        except (KeyError, ValueError):
            continue
    return result


def read_pressure(path: str) -> dict[str, Stall]:
    """A PSI file parsed; {} when the kernel offers none: the file is absent (no PSI in the
    kernel, psi=0 on 6.1+, `cgroup.pressure` 0) or refuses to be read (EOPNOTSUPP: psi=0 on
    kernels that still make the file)."""
    try:
        return parse_pressure(read(path))
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.EOPNOTSUPP):
            return {}
        raise


# --- paths -------------------------------------------------------------------------------------


def check_component(part: str) -> str:
    if not part or part in (".", "..") or "/" in part or "\0" in part:
        raise ValueError(f"{part!r} is not a cgroup directory name")
    return part


def check_base(base: str) -> str:
    """A base is relative to the cgroup root, e.g. `sandman` or `system.slice/sandman.service`."""
    parts = base.strip("/").split("/")
    for part in parts:
        check_component(part)
    return "/".join(parts)


def join_path(base: str, slice_path: Sequence[str], name: str | None) -> str:
    """`base` + the slice path without its first element + the sandbox name. A slice path starts
    at the root slice, which is the base itself: the driver need not know its name."""
    parts = list(slice_path[1:])
    if name is not None:
        parts.append(name)
    return "/".join([base, *(check_component(p) for p in parts)])


def check_rel(base: str, rel: str) -> str:
    """A relative cgroup path this driver may touch: the base or below it, nothing else, so that a
    wrong argument can never kill or remove another program's cgroup."""
    rel = rel.strip("/")
    if rel != base and not rel.startswith(base + "/"):
        raise ValueError(f"cgroup {rel!r} is not under this instance's base {base!r}")
    for part in rel.split("/"):
        check_component(part)
    return rel


def require_dirs(directories: Iterable[str]) -> None:
    """FileNotFoundError naming the first cgroup directory that does not exist: limits and usage
    of a missing cgroup are an error, never an empty answer that would hide the drift."""
    for directory in directories:
        if not os.path.isdir(directory):
            raise FileNotFoundError(errno.ENOENT, "no such cgroup", directory)


# --- file I/O ----------------------------------------------------------------------------------


def write(path: str, value: str) -> None:
    """One write(2) of `value`, as cgroupfs wants it; errors carry the file in `filename`."""
    data = value.encode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
    except OSError as exc:
        raise OSError(exc.errno, f"{exc.strerror} (writing {value!r})", path) from None


def read(path: str) -> str:
    # os.open/os.read: a cgroup file is one short read, and observe reads hundreds of them, where
    # a text-mode open() costs three times as much.
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    try:
        chunks = []
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError as exc:
        raise OSError(exc.errno, exc.strerror, path) from None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("ascii")


def read_optional(path: str) -> str | None:
    """The file's text, or None when the file (a controller's, or the cgroup) does not exist."""
    try:
        return read(path)
    except FileNotFoundError:
        return None


def read_int(path: str) -> int | None:
    text = read_optional(path)
    return None if text is None else int(text.split()[0])


def subtree(top: str) -> list[str]:
    """Every cgroup directory at and below `top`, children before parents; [] when `top` is gone."""
    if not os.path.isdir(top):
        return []
    return [d for d, _, _ in os.walk(top, topdown=False)]


def procs(directory: str) -> list[int]:
    """PIDs in one cgroup (not its children); [] when the cgroup is gone."""
    text = read_optional(os.path.join(directory, "cgroup.procs"))
    return [int(pid) for pid in text.split()] if text else []


def subtree_procs(tops: Iterable[str]) -> list[int]:
    return sorted({pid for top in tops for d in subtree(top) for pid in procs(d)})


def sigkill(pids: Iterable[int]) -> None:
    """SIGKILL each PID but our own: a sandman process found inside would otherwise kill itself,
    and the cgroup then simply does not empty (kill() reports False)."""
    me = os.getpid()
    for pid in pids:
        if pid != me:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def kill_loop(tops: Sequence[str], timeout: float, strike: Callable[[float], None]) -> bool:
    """Strike (kill every process of the subtrees, see the drivers) until they are empty.

    A strike freezes the subtree before it reads cgroup.procs and kills, so no process can fork
    in between and a double fork cannot escape; the loop catches any process that joined
    meanwhile. `strike` gets the deadline. True when the subtrees are empty (or gone).
    """
    deadline = time.monotonic() + timeout
    while True:
        if not subtree_procs(tops):
            return True
        if time.monotonic() >= deadline:
            return False
        strike(deadline)
        wait_until(lambda: not subtree_procs(tops), min(deadline, time.monotonic() + 0.5))


def wait_until(done: Callable[[], bool], deadline: float) -> bool:
    """Poll `done` until it holds or `deadline` passes. The pause starts at half a millisecond and
    doubles up to _POLL: a killed init is gone within a millisecond, and a fixed 20 ms tick made
    every destroy wait a whole tick (2 s of a 100-sandbox teardown)."""
    pause = _FIRST_POLL
    while not done():
        if time.monotonic() >= deadline:
            return False
        time.sleep(pause)
        pause = min(pause * 2, _POLL)
    return True


def rmdir_tree(top: str, deadline: float) -> None:
    """rmdir `top` and its children bottom-up; gone already is fine, EBUSY (processes still
    exiting) is retried until `deadline`, then raised with the directory in `filename`."""
    for directory in subtree(top):
        pause = _FIRST_POLL
        while True:
            try:
                os.rmdir(directory)
                break
            except FileNotFoundError:
                break
            except OSError as exc:
                if exc.errno != errno.EBUSY or time.monotonic() >= deadline:
                    raise OSError(exc.errno, exc.strerror, directory) from None
                time.sleep(pause)
                pause = min(pause * 2, _POLL)
