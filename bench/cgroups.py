"""The cgroup benchmark: sandman's cgroup driver beside a shell script, and `status` of 100 running
sandboxes beside the bare CLI import (root).

    sudo .venv/bin/python bench/cgroups.py [--cgroups 100] [--sandboxes 100] [--runs 10]
                                           [--warmups 2] [--python PATH]

Two parts, each interleaved (every round runs every contender once, in turn):

1. The driver, in-process: `create`, `set_limits` (all six limits) and `remove` of N sandbox
   cgroups under a throwaway base `sandman-bench-<hex>` (the driver `driver_for` picks for this
   host: V1Driver on v1 and hybrid hosts, V2Driver on pure v2 ones); once more as apply and
   destroy use it (plus `restrict_devices`, `exists` and `kill`). Beside it, bash scripts making
   the same directories and writing the same values into the same files, then removing them:
   one `mkdir` and one `rmdir` per sandbox, and batched (one `mkdir` and one `rmdir` for all),
   and `bash -c :`, the floor of any script. Before timing, one cgroup made by each is compared
   file by file, so both do the same writes.
2. `python -m sandman status` and `status --json` with N running sandboxes (`/bin/sleep 1000`,
   default namespaces, no `[network]`) applied into a private state dir, against
   `python -c "import sandman.cli"` (the issue's yardstick) and `python -c pass`; then the imports
   of the status path (`python -X importtime`) and whether pydantic or pyroute2 is among them.

Whole commands are timed as in common.py; the driver with `time.perf_counter()` around the
calls. Nothing asserts a time. Everything is removed at the end, on error and on Ctrl-C too:
the sandboxes with `sandman destroy`, then whatever cgroup of the base or of the instance is left,
by hand.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from common import (
    BenchError,
    Cleanup,
    Command,
    Peer,
    Stats,
    clean_env,
    describe_host,
    emit,
    module_version,
    ms,
    ratio,
    real_python,
    require_modules,
    run_main,
    run_once,
    table,
    time_interleaved,
)
from load import ImportSummary, forbidden_imports, importtime, top_tables

from sandman.kernel.cgroup import CgroupDriver, V1Driver, V2Driver, driver_for
from sandman.units.model import Limits
from sandman.units.names import cgroup_root, instance_tag

CGROUP_ROOT = "/sys/fs/cgroup"
TARGET_RATIO = 3.0
TARGET = "status for 100 running sandboxes within 3x python3 -c 'import sandman.cli'"
IMPORTTIME_RUNS = 5
TOP_IMPORTS = 10
FORBIDDEN = ("pydantic", "pyroute2")
DEVICES = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm", "c 5:0 rwm")

# The limits of every benchmark cgroup, as a unit would give them, and what the files hold.
LIMITS = {
    "memory_max": 64 << 20,
    "memory_high": 48 << 20,
    "cpu_max": "50%",
    "cpu_weight": 200,
    "pids_max": 64,
    "io_weight": 100,
}
# (controller, file, value) per version; the io weight file is added when the kernel has one.
V1_WRITES = (
    ("memory", "memory.limit_in_bytes", str(64 << 20)),
    ("memory", "memory.soft_limit_in_bytes", str(48 << 20)),
    ("cpu", "cpu.cfs_quota_us", "50000"),
    ("cpu", "cpu.shares", "2048"),
    ("pids", "pids.max", "64"),
)
V1_IO = (("blkio.weight", "500"), ("blkio.bfq.weight", "100"))  # io_weight 100 on CFQ, BFQ
V2_WRITES = (
    ("memory", "memory.max", str(64 << 20)),
    ("memory", "memory.high", str(48 << 20)),
    ("cpu", "cpu.max", "50000 100000"),
    ("cpu", "cpu.weight", "200"),
    ("pids", "pids.max", "64"),
)
V2_IO = (("io.weight", "default 100"),)

DRIVER = "driver: create + set_limits + remove"
DRIVER_CREATE = "  of which create"
DRIVER_LIMITS = "  of which set_limits"
DRIVER_REMOVE = "  of which remove"
DRIVER_APPLY = "driver as apply/destroy: + devices, exists, kill"
BASH_EACH = "bash: mkdir/rmdir per sandbox, echo > files"
BASH_BATCH = "bash: one mkdir, echo > files, one rmdir"
BASH_FLOOR = "bash -c : (start-up only)"

PASS = "python -c pass"
IMPORT_CLI = 'python -c "import sandman.cli"'
STATUS_EMPTY = "python -m sandman status (no sandbox)"
STATUS = "python -m sandman status"
STATUS_JSON = "python -m sandman status --json"


# --- cleanup ----------------------------------------------------------------------------------


def cgroup_mounts() -> list[str]:
    """Every cgroup and cgroup2 mount point of the host."""
    mounts = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        if right.split()[0] in ("cgroup", "cgroup2"):
            mounts.append(left.split()[4])
    return mounts


def leftover_dirs(base: str) -> list[str]:
    return [os.path.join(m, base) for m in cgroup_mounts() if os.path.isdir(os.path.join(m, base))]


def scrub(base: str) -> list[str]:
    """Remove `base` from every cgroup hierarchy without sandman: thaw, SIGKILL, rmdir bottom-up.
    Returns what is still there."""
    deadline = time.monotonic() + 10
    for top in leftover_dirs(base):
        for directory, _, _ in os.walk(top, topdown=False):
            while os.path.isdir(directory) and time.monotonic() < deadline:
                for name, value in (("freezer.state", "THAWED"), ("cgroup.freeze", "0")):
                    with contextlib.suppress(OSError):
                        Path(directory, name).write_text(value)
                with contextlib.suppress(OSError):
                    for pid in Path(directory, "cgroup.procs").read_text().split():
                        with contextlib.suppress(ProcessLookupError):
                            os.kill(int(pid), signal.SIGKILL)
                with contextlib.suppress(OSError):
                    os.rmdir(directory)
                if os.path.isdir(directory):
                    time.sleep(0.01)
    return leftover_dirs(base)


def remove_base(base: str, driver: CgroupDriver | None) -> None:
    if driver is not None and driver.exists(driver.base):
        driver.kill(driver.base)
        driver.remove(driver.base)
    left = scrub(base)
    if left:
        raise BenchError(f"cgroups left behind: {', '.join(left)}")


# --- part 1: the driver beside a shell script --------------------------------------------------


@dataclass
class Layout:
    """Where the files of one cgroup `rel` live, and what the benchmark writes into them."""

    version: int
    tops: dict[str, str]  # controller -> hierarchy directory (v2: every one is the root)
    writes: list[tuple[str, str, str]]  # (controller, file, value)

    def directories(self, rel: str) -> list[str]:
        return [os.path.join(top, rel) for top in dict.fromkeys(self.tops.values())]

    def file(self, controller: str, rel: str, name: str) -> str:
        return os.path.join(self.tops[controller], rel, name)


def layout_of(driver: CgroupDriver) -> Layout:
    """The hierarchies the driver uses and the writes of LIMITS on this host, taken from the
    files the kernel offers in the base (made by the driver already)."""
    if isinstance(driver, V1Driver):
        tops = dict(driver.hierarchies)
        writes = [w for w in V1_WRITES if w[0] in tops]
        io_candidates: Sequence[tuple[str, str]] = V1_IO
        io_controller = "blkio"
    elif isinstance(driver, V2Driver):
        tops = {c: driver.root for c in ("memory", "cpu", "pids", "io")}
        writes = list(V2_WRITES)
        io_candidates, io_controller = V2_IO, "io"
    else:
        raise BenchError(f"unknown cgroup driver {type(driver).__name__}")
    probe = driver.path((), "probe")
    driver.create(probe)
    try:
        for name, value in io_candidates:
            if io_controller in tops and os.path.exists(
                os.path.join(tops[io_controller], probe, name)
            ):
                writes.append((io_controller, name, value))
                break
    finally:
        driver.remove(probe)
    return Layout(driver.version, tops, writes)


def shell_script(layout: Layout, base: str, count: int, batched: bool, remove: bool = True) -> str:
    """A bash script that makes `base/s0..` in every hierarchy, writes the limits, removes them."""
    hierarchies = " ".join(f'"{top}/$B/$n"' for top in dict.fromkeys(layout.tops.values()))
    writes = "\n".join(
        f'    echo "{value}" > "{layout.tops[controller]}/$B/$n/{name}"'
        for controller, name, value in layout.writes
    )
    lines = ["set -e", f"B={base}", f"N={count}"]
    if batched:
        tops = ",".join(dict.fromkeys(layout.tops.values()))
        braces = f"{{{tops}}}" if len(set(layout.tops.values())) > 1 else tops
        every = f"{braces}/$B/s{{0..{count - 1}}}"
        lines += [f"mkdir {every}", "for ((i = 0; i < N; i++)); do", "    n=s$i", writes, "done"]
        if remove:
            lines.append(f"rmdir {every}")
    else:
        lines += [
            "for ((i = 0; i < N; i++)); do",
            "    n=s$i",
            f"    mkdir {hierarchies}",
            writes,
            "done",
        ]
        if remove:
            lines += [
                "for ((i = 0; i < N; i++)); do",
                "    n=s$i",
                f"    rmdir {hierarchies}",
                "done",
            ]
    return "\n".join(lines) + "\n"


def read_written(layout: Layout, rel: str) -> dict[str, str]:
    return {
        f"{controller}/{name}": Path(layout.file(controller, rel, name)).read_text().strip()
        for controller, name, _ in layout.writes
    }


def check_same_writes(driver: CgroupDriver, layout: Layout, workdir: str, limits: Limits) -> None:
    """One cgroup made by the driver and one by the script hold the same values."""
    rel = driver.path((), "d0")
    driver.create(rel)
    driver.set_limits(rel, limits)
    script = os.path.join(workdir, "check.sh")
    Path(script).write_text(shell_script(layout, driver.base, 1, batched=False, remove=False))
    subprocess.run(["bash", script], check=True, env=clean_env())
    by_driver = read_written(layout, rel)
    by_script = read_written(layout, driver.path((), "s0"))
    driver.remove(rel)
    driver.remove(driver.path((), "s0"))
    if by_driver != by_script:
        raise BenchError(
            f"the script does not write what the driver does: {by_driver} vs {by_script}"
        )


def driver_round(driver: CgroupDriver, rels: Sequence[str], limits: Limits) -> dict[str, float]:
    """create + set_limits of every cgroup, then remove each; ms per phase and in all."""
    t0 = time.perf_counter()
    for rel in rels:
        driver.create(rel)
    t1 = time.perf_counter()
    for rel in rels:
        driver.set_limits(rel, limits)
    t2 = time.perf_counter()
    for rel in rels:
        driver.remove(rel)
    t3 = time.perf_counter()
    return {
        DRIVER: (t3 - t0) * 1000,
        DRIVER_CREATE: (t1 - t0) * 1000,
        DRIVER_LIMITS: (t2 - t1) * 1000,
        DRIVER_REMOVE: (t3 - t2) * 1000,
    }


def driver_apply_round(driver: CgroupDriver, rels: Sequence[str], limits: Limits) -> float:
    """What apply and destroy do with each sandbox's cgroup (sandman/apply/sandboxes.py)."""
    start = time.perf_counter()
    for rel in rels:
        driver.create(rel)
        driver.set_limits(rel, limits)
        driver.restrict_devices(rel, DEVICES)
    for rel in rels:
        if driver.exists(rel):
            driver.kill(rel)
            driver.remove(rel)
    return (time.perf_counter() - start) * 1000


def bench_driver(args: argparse.Namespace, workdir: str, cleanup: Cleanup) -> str:
    base = f"sandman-bench-{secrets.token_hex(3)}"
    holder: list[CgroupDriver] = []
    cleanup.add(f"remove cgroup {base}", lambda: remove_base(base, holder[0] if holder else None))
    driver = driver_for("bench", base=base)
    holder.append(driver)
    driver.create(driver.base)
    layout = layout_of(driver)
    limits = Limits.model_validate(LIMITS)
    check_same_writes(driver, layout, workdir, limits)
    count = args.cgroups
    rels = [driver.path((), f"d{i}") for i in range(count)]
    scripts = {}
    for label, batched in ((BASH_EACH, False), (BASH_BATCH, True)):
        path = os.path.join(workdir, f"{'batched' if batched else 'each'}.sh")
        Path(path).write_text(shell_script(layout, driver.base, count, batched))
        scripts[label] = Command(label, ("bash", path), cwd=workdir)
    floor = Command(BASH_FLOOR, ("bash", "-c", ":"), cwd=workdir)

    samples: dict[str, list[float]] = {
        k: [] for k in (DRIVER, DRIVER_CREATE, DRIVER_LIMITS, DRIVER_REMOVE, DRIVER_APPLY, *scripts)
    }
    samples[BASH_FLOOR] = []

    def one_round(keep: bool) -> None:
        for label, value in driver_round(driver, rels, limits).items():
            if keep:
                samples[label].append(value)
        applied = driver_apply_round(driver, rels, limits)
        for command in (*scripts.values(), floor):
            elapsed = run_once(command)
            if keep:
                samples[command.label].append(elapsed)
        if keep:
            samples[DRIVER_APPLY].append(applied)
        top = os.path.join(layout.tops["pids"], driver.base)
        left = [d for d in os.listdir(top) if os.path.isdir(os.path.join(top, d))]
        if left:
            raise BenchError(f"a round left cgroups behind: {', '.join(sorted(left)[:5])}")

    for _ in range(args.warmups):
        one_round(keep=False)
    for index in range(args.runs):
        if sys.stderr.isatty():
            print(f"\r  round {index + 1}/{args.runs}", end="", file=sys.stderr, flush=True)
        one_round(keep=True)
    if sys.stderr.isatty():
        print("\r" + " " * 30 + "\r", end="", file=sys.stderr, flush=True)

    stats = {label: Stats(tuple(values)) for label, values in samples.items()}
    base_ms = stats[DRIVER].median
    rows = []
    for label, s in stats.items():
        per = "" if label == BASH_FLOOR else f"{s.median * 1000 / count:.0f}"
        rows.append(
            [label, ms(s.median), f"{ms(s.low)}-{ms(s.high)}", per, ratio(s.median, base_ms)]
        )
    files = ", ".join(f"{c}/{n}" for c, n, _ in layout.writes)
    hierarchies = ", ".join(dict.fromkeys(layout.tops.values()))
    lines = [
        f"part 1: {count} sandbox cgroups made, limited and removed "
        f"(cgroup v{layout.version}, {type(driver).__name__}, base {driver.base})",
        f"  hierarchies: {hierarchies}",
        f"  files written per cgroup: {files}",
        f"  {args.runs} interleaved rounds after {args.warmups} warm-ups; the driver in-process "
        "(perf_counter around the calls), the scripts as whole `bash FILE` processes",
        "",
        table(
            ["", "median ms", "min-max ms", "us per cgroup", "vs driver"],
            rows,
            right=(1, 2, 3, 4),
        ),
    ]
    return "\n".join(lines)


# --- part 2: status of running sandboxes -------------------------------------------------------


@dataclass
class Instance:
    python: str
    workdir: str
    count: int
    state: str = ""
    units: str = ""
    images: str = ""
    logs: str = ""
    notes: list[str] = field(default_factory=list)

    def sandman(self, *args: str) -> tuple[str, ...]:
        return (self.python, "-m", "sandman", *args)

    def paths(self) -> tuple[str, ...]:
        return ("--state-dir", self.state, "--image-dir", self.images, "--log-dir", self.logs)

    def run(self, *args: str) -> str:
        result = subprocess.run(
            self.sandman(*args),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=clean_env(),
            cwd=self.workdir,
            check=False,
        )
        if result.returncode != 0:
            tail = "\n".join(result.stderr.strip().splitlines()[-10:])
            raise BenchError(f"`sandman {' '.join(args)}` exited with {result.returncode}:\n{tail}")
        return result.stdout


def free_state_dir(workdir: str) -> str:
    """A state dir whose instance tag no cgroup on the host carries yet."""
    for attempt in range(100):
        candidate = os.path.join(workdir, f"state-{attempt}")
        if not leftover_dirs(cgroup_root(instance_tag(candidate))):
            return candidate
    raise BenchError("no state dir under the work dir has an instance tag free on this host")


def start_sandboxes(instance: Instance, cleanup: Cleanup) -> None:
    instance.images = os.path.join(instance.workdir, "images")
    instance.logs = os.path.join(instance.workdir, "logs")
    instance.units = os.path.join(instance.workdir, "units")
    instance.state = free_state_dir(instance.workdir)
    instance.run("image", "busybox", "--image-dir", instance.images)
    os.makedirs(instance.units)
    for n in range(instance.count):
        with open(
            os.path.join(instance.units, f"s{n:03d}.sandbox.toml"), "w", encoding="utf-8"
        ) as f:
            f.write('[sandbox]\ncommand = ["/bin/sleep", "1000"]\nstop_timeout = "1s"\n')
    base = cgroup_root(instance_tag(instance.state))

    def take_down() -> None:
        records = os.path.join(instance.state, "sandboxes")
        try:
            if os.path.isdir(records) and os.listdir(records):
                instance.run("destroy", instance.units, *instance.paths())
        finally:
            left = scrub(base)
            if left:
                raise BenchError(f"cgroups left behind: {', '.join(left)}")

    cleanup.add(f"sandman destroy {instance.units}", take_down)
    instance.run("apply", instance.units, *instance.paths())
    report = json.loads(instance.run("status", "--json", *instance.paths()))
    running = [s for s in report["sandboxes"] if s["state"] == "running"]
    if len(running) != instance.count:
        raise BenchError(f"{len(running)} of {instance.count} sandboxes run after apply")


def bench_status(args: argparse.Namespace, python: str, workdir: str, cleanup: Cleanup) -> str:
    instance = Instance(python, workdir, args.sandboxes)
    start_sandboxes(instance, cleanup)
    status_args = ("-m", "sandman", "status", *instance.paths())
    empty = ("--state-dir", os.path.join(workdir, "empty-state"), *instance.paths()[2:])
    commands = [
        Command(PASS, (python, "-c", "pass"), cwd=workdir),
        Command(IMPORT_CLI, (python, "-c", "import sandman.cli"), cwd=workdir),
        Command(STATUS_EMPTY, (python, "-m", "sandman", "status", *empty), cwd=workdir),
        Command(STATUS, (python, *status_args), cwd=workdir),
        Command(STATUS_JSON, (python, *status_args, "--json"), cwd=workdir),
    ]
    stats = time_interleaved(commands, args.runs, args.warmups)
    base = stats[IMPORT_CLI].median
    start = stats[PASS].median
    rows = [
        [
            label,
            ms(s.median),
            f"{ms(s.low)}-{ms(s.high)}",
            ms(s.median - start),
            ratio(s.median, base),
        ]
        for label, s in stats.items()
    ]
    lines = [
        f"part 2: status with {instance.count} running sandboxes (/bin/sleep 1000, no network), "
        f"state dir {instance.state}",
        f"  {args.runs} interleaved rounds after {args.warmups} warm-ups; wall time of the whole "
        "process",
        "",
        table(
            ["command", "median ms", "min-max ms", "over `pass` ms", "vs import sandman.cli"],
            rows,
            right=(1, 2, 3, 4),
        ),
        "",
        f"target (issue): {TARGET}",
    ]
    for label in (STATUS, STATUS_JSON):
        achieved = stats[label].median / base
        verdict = "met" if achieved <= TARGET_RATIO else "MISSED"
        note = "" if instance.count == 100 else f" (measured with {instance.count} sandboxes)"
        lines.append(
            f"  {label}: {ms(stats[label].median)} ms / {ms(base)} ms = {achieved:.2f}x, "
            f"limit {TARGET_RATIO:.2f}x: {verdict}{note}"
        )
    emit(
        "status_cli",
        f"`status` of {instance.count} running sandboxes, no network (earlier target)",
        sandman=stats[STATUS],
        peers=[Peer("import sandman.cli", base)],
        base="import sandman.cli",
        limit=TARGET_RATIO,
        target=f"<= {TARGET_RATIO:g}x `import sandman.cli`",
    )
    lines += ["", import_report(python, status_args, workdir)]
    return "\n".join(lines)


def import_report(python: str, status_args: Sequence[str], workdir: str) -> str:
    runs = [importtime(python, status_args, workdir) for _ in range(IMPORTTIME_RUNS)]
    summary = ImportSummary.of(runs)
    lines = [
        f"imports of `{STATUS}` (python -X importtime, median of {IMPORTTIME_RUNS} runs): "
        f"{len(summary.order)} modules, {ms(summary.total())} ms of import time in all",
        "",
        *top_tables(summary),
    ]
    lines.append("modules that must stay off the status path (ok = not imported):")
    paths = {STATUS: runs[0], STATUS_JSON: importtime(python, (*status_args, "--json"), workdir)}
    for label, rows_of in paths.items():
        for prefix, found in forbidden_imports(rows_of, FORBIDDEN).items():
            shown = "ok" if not found else f"IMPORTED ({', '.join(found[:4])}"
            if found:
                shown += ", ...)" if len(found) > 4 else ")"
            lines.append(f"  {label}: {prefix}: {shown}")
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.split("\n"))


# --- main ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def session() -> Iterator[tuple[str, Cleanup]]:
    cleanup = Cleanup("bench/cgroups.py")
    workdir = tempfile.mkdtemp(prefix="sandman-bench-cgroups-")

    def remove_workdir() -> None:
        if cleanup.failed:
            print(
                f"bench/cgroups.py: something was not cleaned up; {workdir} is kept",
                file=sys.stderr,
            )
        else:
            shutil.rmtree(workdir)

    cleanup.add(f"remove {workdir}", remove_workdir)
    try:
        yield workdir, cleanup
    finally:
        cleanup.run()


def run(args: argparse.Namespace) -> None:
    python = real_python(args.python)
    with session() as (workdir, cleanup):
        require_modules(python, ("sandman.cli",), cwd=workdir)
        print("sandman cgroup benchmark")
        print(f"  interpreter: {describe_host(python)}")
        print(f"  sandman {module_version(python, 'sandman', workdir)}")
        print()
        print(bench_driver(args, workdir, cleanup))
        print()
        print(bench_status(args, python, workdir, cleanup))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time sandman's cgroup driver against a shell script, and status of running "
        "sandboxes against the bare CLI import (root)."
    )
    parser.add_argument("--cgroups", type=int, default=100, help="cgroups per round (default 100)")
    parser.add_argument(
        "--sandboxes", type=int, default=100, help="running sandboxes for status (default 100)"
    )
    parser.add_argument("--runs", type=int, default=10, help="timed rounds (default 10)")
    parser.add_argument("--warmups", type=int, default=2, help="untimed rounds first (default 2)")
    parser.add_argument(
        "--python", metavar="PATH", help="the interpreter of the timed commands (default: this one)"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.warmups < 0 or args.cgroups < 1 or args.sandboxes < 1:
        parser.error("--runs, --cgroups and --sandboxes must be at least 1, --warmups at least 0")
    if os.geteuid() != 0:
        print("bench/cgroups.py: needs root (cgroups, sandboxes); skipped")
        return 0
    return run_main(
        "bench/cgroups.py", lambda: run(args), (ValueError, OSError, subprocess.CalledProcessError)
    )


if __name__ == "__main__":
    raise SystemExit(main())
