"""Shared helpers of the benchmarks: the interpreter, interleaved timing, statistics, tables.

Every benchmark times whole commands the same way, so that numbers stay comparable across
benchmarks and across runs: `time.perf_counter()` around `subprocess.run`, a few warm-ups per
command first, then N rounds that run every command once in turn (A B C, A B C, ...), so that a
slow minute of the machine hits all commands alike. Results are the median, min and max in ms.
Nothing here asserts a time: the benchmarks report, people judge.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import FrameType

# Variables that change how an interpreter starts or what sandman reads; a benchmark must not
# inherit them from whoever runs it.
_STRIPPED_ENV = (
    "PYTHONPROFILEIMPORTTIME",
    "PYTHONDEVMODE",
    "PYTHONDONTWRITEBYTECODE",
    "PYTHONMALLOC",
    "PYTHONTRACEMALLOC",
    "PYTHONWARNINGS",
    "PYTHONINSPECT",
    "PYTHONVERBOSE",
    "SANDMAN_STATE_DIR",
    "SANDMAN_IMAGE_DIR",
    "SANDMAN_LOG_DIR",
)


class BenchError(Exception):
    """A benchmark cannot run (a command fails, the interpreter lacks a package)."""


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV}
    env["LC_ALL"] = env.get("LC_ALL", "C.UTF-8")
    return env


def real_python(candidate: str | None = None) -> str:
    """The interpreter binary that commands run with: `candidate` or this one.

    A pyenv shim (or any wrapper script) costs its own start-up on every run, which would be
    timed with the command, so the candidate is asked once for its own `sys.executable`, the path
    of the binary the shim ends up running (a venv's `bin/python` stays as it is: resolving that
    link would leave the venv and its packages behind).
    """
    if candidate is None:
        return sys.executable
    try:
        result = subprocess.run(
            [candidate, "-c", "import sys; print(sys.executable)"],
            capture_output=True,
            text=True,
            check=False,
            env=clean_env(),
        )
    except OSError as exc:
        raise BenchError(f"cannot run {candidate}: {exc.strerror}") from None
    path = result.stdout.strip()
    if result.returncode != 0 or not path:
        raise BenchError(f"{candidate} is not a working Python: {result.stderr.strip()}")
    return path


def require_modules(python: str, modules: Sequence[str], cwd: str | None = None) -> None:
    """Fail early, with a hint, when the interpreter cannot import what the commands need."""
    code = "import importlib, sys\nfor m in sys.argv[1:]: importlib.import_module(m)"
    result = subprocess.run(
        [python, "-c", code, *modules],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
        cwd=cwd,
    )
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1:] or ["?"]
        raise BenchError(
            f"{python} cannot import {', '.join(modules)} ({last[0]}); run the benchmark with "
            "the repo's .venv/bin/python or pass --python"
        )


def module_version(python: str, module: str, cwd: str | None = None) -> str:
    """`VERSION from DIR` of a module as the interpreter imports it."""
    code = (
        "import os, sys, importlib\n"
        "m = importlib.import_module(sys.argv[1])\n"
        "print(getattr(m, '__version__', '?'), 'from', os.path.dirname(m.__file__ or '?'))"
    )
    result = subprocess.run(
        [python, "-c", code, module],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
        cwd=cwd,
    )
    return result.stdout.strip() or "?"


@dataclass(frozen=True)
class Command:
    """One command to time; `label` names it in tables.

    Give `cwd` a neutral directory for `python -m` commands: the working directory comes first
    on their `sys.path`, and a repo checkout there would shadow the installed package.
    """

    label: str
    argv: tuple[str, ...]
    env: Mapping[str, str] | None = None
    cwd: str | None = None


@dataclass(frozen=True)
class Stats:
    """Wall times of one command in ms."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def low(self) -> float:
        return min(self.samples)

    @property
    def high(self) -> float:
        return max(self.samples)


def run_once(command: Command) -> float:
    """Run a command to its end and return its wall time in ms; a failure raises BenchError."""
    env = dict(command.env) if command.env is not None else clean_env()
    start = time.perf_counter()
    result = subprocess.run(
        command.argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        cwd=command.cwd,
        check=False,
    )
    elapsed = (time.perf_counter() - start) * 1000.0
    if result.returncode != 0:
        raise BenchError(_failure(command, env))
    return elapsed


def _failure(command: Command, env: Mapping[str, str]) -> str:
    """Run a failed command again, capturing its output, to say why it failed."""
    again = subprocess.run(
        command.argv, capture_output=True, text=True, env=dict(env), cwd=command.cwd, check=False
    )
    output = (again.stderr or again.stdout).strip()
    return f"{command.label!r} failed (exit {again.returncode}): {' '.join(command.argv)}\n{output}"


def time_interleaved(
    commands: Sequence[Command], runs: int, warmups: int = 3, progress: bool | None = None
) -> dict[str, Stats]:
    """Warm every command up, then time `runs` rounds of all commands in turn.

    Progress goes to stderr, by default only when it is a terminal.
    """
    if progress is None:
        progress = sys.stderr.isatty()
    for _ in range(warmups):
        for command in commands:
            run_once(command)
    samples: dict[str, list[float]] = {c.label: [] for c in commands}
    for round_index in range(runs):
        if progress:
            print(f"\r  round {round_index + 1}/{runs}", end="", file=sys.stderr, flush=True)
        for command in commands:
            samples[command.label].append(run_once(command))
    if progress:
        print("\r" + " " * 30 + "\r", end="", file=sys.stderr, flush=True)
    return {label: Stats(tuple(values)) for label, values in samples.items()}


def ms(value: float) -> str:
    return f"{value:.1f}"


def ratio(value: float, base: float) -> str:
    return f"{value / base:.2f}x" if base > 0 else "-"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int] = ()) -> str:
    """A plain-text table; columns whose index is in `right` are right-aligned (numbers)."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.rjust(width) if index in right else cell.ljust(width)
            for index, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(row) for row in rows)])


def describe_host(python: str) -> str:
    """One line on what ran the benchmark, printed above every result."""
    result = subprocess.run(
        [
            python,
            "-c",
            "import platform; print(platform.python_implementation(), platform.python_version())",
        ],
        capture_output=True,
        text=True,
        check=False,
        env=clean_env(),
    )
    interpreter = result.stdout.strip() or "?"
    return f"{interpreter} at {python}; {os.cpu_count()} CPUs; {os.uname().release}"


class Cleanup:
    """Undo steps, run last-in first-out at the end, each whatever the others did."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.steps: list[tuple[str, Callable[[], None]]] = []
        self.failed = False

    def add(self, what: str, step: Callable[[], None]) -> None:
        self.steps.append((what, step))

    def run(self) -> None:
        # Neither Ctrl-C nor SIGTERM may cut the clean-up short.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        previous_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
        try:
            while self.steps:
                what, step = self.steps.pop()
                try:
                    step()
                except Exception as exc:
                    self.failed = True
                    print(f"{self.name}: cleanup: {what}: {exc}", file=sys.stderr)
        finally:
            signal.signal(signal.SIGINT, previous)
            signal.signal(signal.SIGTERM, previous_term)


def in_workdir(name: str, prefix: str, body: Callable[[str, Cleanup], None]) -> None:
    """Run `body(workdir, cleanup)` with a new temporary directory and a Cleanup whose steps run
    at the end, on an error and on Ctrl-C; the directory is removed last, or kept (and said so)
    when a step before failed."""
    cleanup = Cleanup(name)
    workdir = tempfile.mkdtemp(prefix=prefix)

    def remove_workdir() -> None:
        if cleanup.failed:
            print(f"{name}: something was not cleaned up; {workdir} is kept", file=sys.stderr)
            return
        # Mounts made in a sandbox's own mount namespace go with it, a moment after its end.
        for _ in range(20):
            try:
                shutil.rmtree(workdir)
                return
            except OSError:
                time.sleep(0.1)
        shutil.rmtree(workdir)

    cleanup.add(f"remove {workdir}", remove_workdir)
    try:
        body(workdir, cleanup)
    finally:
        cleanup.run()


def restore_at_end(cleanup: Cleanup, path: str, what: str) -> None:
    """Write a /proc/sys file's present value back at the end, if it has changed by then."""
    with open(path, encoding="ascii") as handle:
        value = handle.read()

    def restore() -> None:
        with open(path, encoding="ascii") as f:
            if f.read() == value:
                return
        with open(path, "w", encoding="ascii") as f:
            f.write(value)

    cleanup.add(f"restore {what}", restore)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def round_options(description: str, many: int, installs: str) -> argparse.ArgumentParser:
    """The options of the benchmarks timed in rounds of 1 and of `many` sandboxes."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=5, help="rounds of 1 sandbox (default 5)")
    parser.add_argument(
        "--runs-many", type=int, default=3, help=f"rounds of {many} sandboxes (default 3)"
    )
    parser.add_argument("--warmups", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument(
        "--python", metavar="PATH", help="the interpreter to time (default: this one)"
    )
    parser.add_argument(
        "--no-install", action="store_true", help=f"do not apt-get install {installs}"
    )
    return parser


def parse_rounds(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    if args.runs < 1 or args.runs_many < 1 or args.warmups < 0:
        parser.error("--runs and --runs-many must be at least 1, --warmups at least 0")
    return args


def run_main(name: str, run: Callable[[], None], errors: tuple[type[Exception], ...]) -> int:
    """Run a benchmark: its own errors and interrupts (SIGTERM too, so clean-up runs) become a
    message and an exit code, never a traceback."""
    signal.signal(signal.SIGTERM, _interrupt)
    caught: tuple[type[Exception], ...] = (BenchError, *errors)
    try:
        run()
    except caught as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`| head`); say nothing more, not even at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return 0


# --- the host and the peers -----------------------------------------------------------------

UNIFIED = "/sys/fs/cgroup/unified"


def cgroup_layout() -> str:
    """ "unified", "hybrid" (v1 controllers plus a cgroup2 at /sys/fs/cgroup/unified) or
    "legacy", from this process's mount table."""
    types = {}
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        for line in handle:
            left, _, right = line.partition(" - ")
            types[left.split()[4]] = right.split()[0]
    if types.get("/sys/fs/cgroup") == "cgroup2":
        return "unified"
    return "hybrid" if types.get(UNIFIED) == "cgroup2" else "legacy"


def busybox_image(python: str, workdir: str, images: str) -> str:
    """`sandman image busybox` into `images`; returns the rootfs every contender runs on."""
    argv = (python, "-m", "sandman", "image", "busybox", "--image-dir", images)
    result = subprocess.run(
        argv, capture_output=True, text=True, env=clean_env(), cwd=workdir, check=False
    )
    if result.returncode != 0:
        raise BenchError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return os.path.join(images, "busybox")


def bwrap_true(rootfs: str, *flags: str) -> tuple[str, ...]:
    """bwrap's run of /bin/true on the rootfs, with /proc and /dev, after `flags`."""
    return ("bwrap", *flags, "--bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev", "/bin/true")


# --- machine-readable results ---------------------------------------------------------------

# bench/run sets this to a file; each benchmark appends one JSON object per figure to it, and
# bench/summary.py turns them into the one table. Unset (a benchmark run by hand), nothing is
# written.
RESULTS_ENV = "SANDMAN_BENCH_RESULTS"


@dataclass(frozen=True)
class Peer:
    """A peer's figure beside sandman's: a median in the row's unit, or why it is missing."""

    label: str
    median: float | None = None
    why: str = ""  # "n/a: REASON" when the peer could not run


def emit(
    key: str,
    figure: str,
    *,
    sandman: Stats | None = None,
    value: float | None = None,
    unit: str = "ms",
    peers: Sequence[Peer] = (),
    base: str | None = None,
    limit: float | None = None,
    target: str = "",
    verdict: str | None = None,
    note: str = "",
) -> None:
    """Append one row of the summary table to the results file, if bench/run asked for one.

    `sandman` (or a single `value`) is sandman's figure; the ratio is sandman's median over the
    median of the peer labelled `base`; with `limit` the verdict is `met` or `MISSED`, unless
    `verdict` says otherwise ("not measured: ...", "n/a: ...").
    """
    path = os.environ.get(RESULTS_ENV)
    if not path:
        return
    median = sandman.median if sandman is not None else value
    row: dict[str, object] = {
        "key": key,
        "figure": figure,
        "unit": unit,
        "median": median,
        "low": sandman.low if sandman is not None else None,
        "high": sandman.high if sandman is not None else None,
        "samples": len(sandman.samples) if sandman is not None else None,
        "peers": [{"label": p.label, "median": p.median, "why": p.why} for p in peers],
        "target": target,
        "note": note,
    }
    ratio_value = None
    if base is not None and median is not None:
        theirs = next((p.median for p in peers if p.label == base), None)
        if theirs:
            ratio_value = median / theirs
    row["ratio"] = ratio_value
    row["base"] = base
    if verdict is None and limit is not None:
        if median is None:
            verdict = "not measured"
        elif base is None:
            verdict = "met" if median <= limit else "MISSED"
        elif ratio_value is None:
            verdict = "not measured: no peer"
        else:
            verdict = "met" if ratio_value <= limit else "MISSED"
    row["verdict"] = verdict or "-"
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
