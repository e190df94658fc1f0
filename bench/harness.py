"""The one harness of bench/: a session, its commands, interleaved rounds, sandman instances,
imports, and the rows of the summary table. Every module times whole commands this one way, so
that numbers compare (bench/README.md, "How times are taken"); nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import FrameType

SLEEP = ("/bin/sleep", "1000")  # the command of every long-running benchmark sandbox
RESULTS_ENV = "SANDMAN_BENCH_RESULTS"  # bench/run's file of rows; unset (by hand): none written


class BenchError(Exception):
    """A benchmark cannot go on (a command failed, a tool is missing); the message says why."""


def clean_env() -> dict[str, str]:
    """Nothing that changes how an interpreter starts (PYTHON*: PYTHONPROFILEIMPORTTIME,
    PYTHONDONTWRITEBYTECODE, ...) or what sandman reads (SANDMAN_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "SANDMAN_"))}
    return {**env, "LC_ALL": env.get("LC_ALL", "C.UTF-8")}


def wait_until(
    done: Callable[[], bool], what: str, timeout: float = 60, every: float = 0.01
) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            raise BenchError(f"{what}: not within {timeout:.0f} s")
        time.sleep(every)


# --- numbers and the summary's rows --------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Samples of one figure, in its unit (ms unless said)."""

    samples: tuple[float, ...]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def __str__(self) -> str:
        return f"{self.median:.1f} ({min(self.samples):.1f}-{max(self.samples):.1f})"


def number(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.1f} ms" if value < 1000 else f"{value / 1000:.2f} s"
    return {"B": f"{value:.0f} B", "MB": f"{value:.1f} MB"}.get(unit, f"{value:g} {unit}")


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], numbers: bool = True) -> str:
    """A plain-text table; with `numbers`, every column after the first right-aligned."""
    widths = [max(len(r[i]) for r in (headers, *rows)) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = (
            c.rjust(w) if numbers and i else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        )
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])


@dataclass(frozen=True)
class Peer:
    """A peer's figure beside sandman's: a median in the row's unit, or why there is none."""

    label: str
    median: float | None = None
    why: str = ""


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
    target: str = "-",
    verdict: str | None = None,
    note: str = "",
) -> None:
    """One row of the summary table, printed and appended to bench/run's results file: sandman's
    figure (`sandman`'s median, or `value`), the peers, the ratio over the peer labelled `base`,
    and with `limit` the verdict, met or MISSED, of the ratio (of the figure without a base)."""
    median = sandman.median if sandman is not None else value
    theirs = next((p.median for p in peers if p.label == base), None)
    ratio = median / theirs if median is not None and theirs else None
    if verdict is None and limit is not None:
        achieved = median if base is None else ratio
        verdict = "not measured" if achieved is None else "met" if achieved <= limit else "MISSED"
    mine = "-" if median is None else number(median, unit)
    if sandman is not None and len(sandman.samples) > 1:  # in ms: the range, in the median's unit
        low, high = min(sandman.samples), max(sandman.samples)
        seconds = sandman.median >= 1000
        mine += f" ({low / 1000:.2f}-{high / 1000:.2f})" if seconds else f" ({low:.1f}-{high:.1f})"
    shown = (
        f"{p.label} {number(p.median, unit) if p.median is not None else p.why}" for p in peers
    )
    ratio_cell = f"{ratio:.2f}x {base}" if ratio else "-"
    cells = [figure, mine, "; ".join(shown) or "-", ratio_cell, target, verdict or "-"]
    print(f"  row {key}: {mine}, {ratio_cell}: {verdict or '-'}")
    if path := os.environ.get(RESULTS_ENV):
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"key": key, "cells": cells, "note": note}) + "\n")


# --- commands and rounds -------------------------------------------------------------------------


def stop_gently(process: subprocess.Popen[bytes]) -> None:
    """After Ctrl-C or SIGTERM (or the daemon's): 2 s to end on its own, then SIGINT (sandman
    undoes a half-made sandbox; a `sandman apply` killed outright could leave one it has not
    recorded), 30 s, then SIGKILL."""
    for signum, grace in ((None, 2.0), (signal.SIGINT, 30.0), (signal.SIGKILL, None)):
        if signum is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
        with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
            process.wait(timeout=grace)
            return


def _nothing(*_: object) -> None:
    pass


@dataclass
class Trial:
    """One contender, run once per round: `start` timed; `stop` after it, timed apart when
    `timed_stop`; `settle` untimed last. `before` and `after` (a census) run untimed around
    `start`, inside `context` (a mount namespace). A failed trial that is not `required` is left
    out with its error; a required one ends the benchmark. A contender that times itself gives
    its samples of a run through `own_times` instead of the run's wall time."""

    label: str
    start: Callable[[], None]
    stop: Callable[[], None] = _nothing
    rounds: int | None = None  # None: every round
    timed_stop: bool = False
    settle: Callable[[], None] = _nothing
    context: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext
    before: Callable[[], None] = _nothing
    after: Callable[[bool], None] = _nothing
    required: bool = True
    own_times: Callable[[], list[float]] | None = None
    up: list[float] = field(default_factory=list)
    down: list[float] = field(default_factory=list)
    error: str | None = None

    def once(self, keep: bool) -> None:
        if self.error is not None:
            return
        try:
            with self.context():
                self.before()
                try:
                    started = time.perf_counter()
                    self.start()
                    middle = time.perf_counter()
                    self.after(keep)
                finally:
                    stopping = time.perf_counter()
                    self.stop()
                    ended = time.perf_counter()
            self.settle()
        except BenchError as exc:
            if self.required:
                raise BenchError(f"{self.label}: {exc}") from None
            self.error = str(exc)
            return
        if keep:
            self.up += self.own_times() if self.own_times else [(middle - started) * 1000.0]
            self.down += [(ended - stopping) * 1000.0] if self.timed_stop else []

    @property
    def stats(self) -> Stats | None:
        return Stats(tuple(self.up)) if self.up and self.error is None else None

    def peer(self, label: str) -> Peer:
        """This trial as a peer of a summary row: its median, or why there is none."""
        if self.stats is not None:
            return Peer(label, self.stats.median)
        return Peer(label, why=f"n/a: {(self.error or 'not run').splitlines()[-1][:80]}")


def peer_of(trials: dict[str, Trial], label: str, short: str = "") -> Peer:
    """The trial `label` as a peer labelled `short`; a peer not installed has no trial."""
    short = short or label
    return trials[label].peer(short) if label in trials else Peer(short, why="n/a: not installed")


def run_rounds(trials: Sequence[Trial], runs: int, warmups: int) -> None:
    """`warmups` untimed rounds, then `runs` timed ones, every contender once in turn (A B C,
    A B C, ...); a trial with fewer `rounds` sits the last ones out."""
    tty = sys.stderr.isatty()
    for index in range(warmups + runs):
        # On a terminal one line redrawn; in a log (the VM guest's console) a line a round.
        where = f"  round {index + 1}/{warmups + runs}"
        print(
            f"\r{where}  " if tty else where, end="" if tty else "\n", file=sys.stderr, flush=True
        )
        keep = index >= warmups
        for trial in trials:
            if not keep or trial.rounds is None or index - warmups < trial.rounds:
                trial.once(keep)
    if tty:
        print("\r" + " " * 30 + "\r", end="", file=sys.stderr, flush=True)


def print_trials(trials: Sequence[Trial]) -> None:
    """Every contender's own times in ms, median (min-max), and its teardown when timed."""
    rows = []
    for t in trials:
        down = str(Stats(tuple(t.down))) if t.down else ""
        rows.append([t.label, str(t.stats or f"failed: {t.error}"), down, str(len(t.up))])
    print(table(["contender", "ms, median (min-max)", "teardown ms", "runs"], rows))


# --- the session ---------------------------------------------------------------------------------


class Cleanup:
    """Undo steps, run last-in first-out at the end, each whatever the others did."""

    def __init__(self, name: str) -> None:
        self.name, self.failed = name, False
        self.steps: list[tuple[str, Callable[[], None]]] = []

    def add(self, what: str, step: Callable[[], None]) -> None:
        self.steps.append((what, step))

    def run(self) -> None:
        # Neither Ctrl-C nor SIGTERM may cut the clean-up short.
        previous = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        while self.steps:
            what, step = self.steps.pop()
            try:
                step()
            except Exception as exc:
                self.failed = True
                print(f"{self.name}: cleanup: {what}: {exc}", file=sys.stderr)
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    def restore_at_end(self, path: str) -> None:
        """Write a /proc/sys file's present value back at the end, if it has changed by then."""
        with open(path, encoding="ascii") as handle:
            value = handle.read()

        def restore() -> None:
            with open(path, "r+", encoding="ascii") as handle:
                if handle.read() != value:
                    handle.seek(0)
                    handle.write(value)

        self.add(f"restore {path}", restore)


class Session:
    """A benchmark's run: its options, the interpreter timed, a temporary work dir where its
    commands run with a clean environment, its clean-up, and the busybox image every contender
    runs on."""

    def __init__(self, args: argparse.Namespace, workdir: str, cleanup: Cleanup) -> None:
        self.args, self.workdir, self.cleanup, self.images = args, workdir, cleanup, ""
        self.python, self.env = real_python(args.python), clean_env()
        # A timed command's stderr goes to a file, read on a failure: a pipe would have to be
        # drained while the command runs, and be timed with it.
        flags = os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC
        self.err = os.open(os.path.join(workdir, "stderr"), flags, 0o600)
        cleanup.add("the stderr file", lambda: os.close(self.err))

    def run(self, argv: Sequence[str]) -> None:
        """A command, stdout to /dev/null; an error with its stderr's end when it fails."""
        os.ftruncate(self.err, 0)
        os.lseek(self.err, 0, os.SEEK_SET)
        null = subprocess.DEVNULL
        process = subprocess.Popen(
            argv, stdin=null, stdout=null, stderr=self.err, env=self.env, cwd=self.workdir
        )
        try:
            code = process.wait()
        except KeyboardInterrupt:
            stop_gently(process)
            raise
        if code != 0:
            os.lseek(self.err, 0, os.SEEK_SET)
            with os.fdopen(os.dup(self.err), "rb") as handle:
                tail = handle.read().decode(errors="replace").strip().splitlines()[-20:]
            raise BenchError(f"`{' '.join(argv)}` exited with {code}:\n" + "\n".join(tail))

    def output(self, argv: Sequence[str]) -> str:
        """Stdout of an untimed command."""
        result = subprocess.run(
            argv, capture_output=True, text=True, env=self.env, cwd=self.workdir, check=False
        )
        if result.returncode != 0:
            raise BenchError(f"`{' '.join(argv)}` exited with {result.returncode}: {result.stderr}")
        return result.stdout

    def sandman(self, *args: str) -> tuple[str, ...]:
        return (self.python, "-m", "sandman", *args)

    def paths(self, state: str) -> tuple[str, ...]:
        logs = os.path.join(self.workdir, "logs")
        return ("--state-dir", state, "--image-dir", self.images, "--log-dir", logs)

    def image(self) -> str:
        """`sandman image busybox` into the work dir; returns the rootfs every contender uses."""
        self.images = os.path.join(self.workdir, "images")
        self.output(self.sandman("image", "busybox", "--image-dir", self.images))
        return os.path.join(self.images, "busybox")

    def command(self, label: str, argv: Sequence[str]) -> Trial:
        """A trial of one whole command."""
        return Trial(label, lambda: self.run(argv))

    def rounds(
        self, title: str, trials: Sequence[Trial], runs: int = 0, shown: Sequence[Trial] = ()
    ) -> None:
        """The trials' rounds (`--runs` unless said; `--warmups` first), then their times and
        those of the trials `shown` (run by theirs)."""
        run_rounds(trials, runs or self.args.runs, self.args.warmups)
        print(f"{title}, {runs or self.args.runs} rounds")
        print_trials([*trials, *shown])

    def importtime(self, args: Sequence[str], runs: int = 3) -> Imports:
        """`python -X importtime ARGS`, `runs` times: each module's median self time in ms."""
        times: dict[str, list[float]] = {}
        for _ in range(runs):
            argv = (self.python, "-X", "importtime", *args)
            result = subprocess.run(
                argv, capture_output=True, text=True, env=clean_env(), cwd=self.workdir, check=False
            )
            found = [m for m in map(_IMPORT_LINE.match, result.stderr.splitlines()) if m]
            if result.returncode != 0 or not found:
                tail = "\n".join(result.stderr.splitlines()[-5:])
                raise BenchError(f"python -X importtime {' '.join(args)} failed:\n{tail}")
            for match in found:
                times.setdefault(match[2], []).append(int(match[1]) / 1000)
        return Imports({m: statistics.median(v) for m, v in times.items()})


def _interrupt(signum: int, frame: FrameType | None) -> None:
    if os.getpid() != _MAIN_PID:  # a forked helper (pyroute2's netns socket) being stopped:
        os._exit(128 + signum)  # it must not unwind the benchmark's stack into the clean-up
    raise KeyboardInterrupt


_MAIN_PID = os.getpid()


def main(
    description: str, body: Callable[[Session], None], root: bool = True, **counts: int
) -> int:
    """Parse --warmups, --python and the module's `counts` (e.g. `runs=5, runs_many=3`: --runs,
    --runs-many with their defaults), then run `body` in a new session: a temporary work dir and
    a Cleanup whose steps run at the end, on an error and on Ctrl-C or SIGTERM; the dir is
    removed last, or kept (and said so) when a step failed. Errors and interrupts become a
    message and an exit code, never a traceback; without root a root benchmark skips itself."""
    name = f"bench/{os.path.basename(sys.argv[0])}"
    parser = argparse.ArgumentParser(prog=name, description=description)
    for option, default in {"warmups": 1, **counts}.items():
        flag = "--" + option.replace("_", "-")
        parser.add_argument(flag, type=int, default=default, help=f"default {default}")
    parser.add_argument("--python", metavar="PATH", help="the interpreter timed (default: this)")
    args = parser.parse_args()
    if any(v < (0 if k == "warmups" else 1) for k, v in vars(args).items() if type(v) is int):
        parser.error("every count must be at least 1 (--warmups at least 0)")
    if root and os.geteuid() != 0:
        print(f"{name}: needs root (namespaces, mounts, cgroups, links); skipped")
        return 0
    signal.signal(signal.SIGTERM, _interrupt)
    cleanup = Cleanup(name)
    try:
        workdir = tempfile.mkdtemp(prefix="sandman-bench-")
        cleanup.add(f"remove {workdir}", lambda: _remove_workdir(workdir, cleanup))
        body(Session(args, workdir, cleanup))
    except (BenchError, OSError, ValueError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    finally:
        cleanup.run()
    return 1 if cleanup.failed else 0


def real_python(candidate: str | None) -> str:
    """The interpreter timed: a pyenv shim (or any wrapper) is asked once for its
    `sys.executable`, so that its own start-up is not timed; a venv's bin/python stays as it is
    (resolving the link would leave the venv)."""
    if candidate is None:
        return sys.executable
    argv = (candidate, "-c", "import sys; print(sys.executable)")
    result = subprocess.run(argv, capture_output=True, text=True, env=clean_env(), check=False)
    if result.returncode != 0 or not result.stdout.strip():
        raise BenchError(f"{candidate} is not a working Python: {result.stderr.strip()}")
    return result.stdout.strip()


def _remove_workdir(workdir: str, cleanup: Cleanup) -> None:
    if cleanup.failed:
        print(f"{cleanup.name}: something was not cleaned up; {workdir} is kept", file=sys.stderr)
        return
    # Mounts made in a sandbox's own mount namespace go with it, a moment after its end.
    for _ in range(20):
        with contextlib.suppress(OSError):
            shutil.rmtree(workdir)
            return
        time.sleep(0.1)
    shutil.rmtree(workdir)


# --- sandman instances ---------------------------------------------------------------------------


def links() -> list[str]:
    return os.listdir("/sys/class/net")


def nft_tables() -> str:
    argv = ("nft", "list", "tables")
    return (
        subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        if shutil.which("nft")
        else ""
    )


def wait_links_gone(*prefixes: str) -> None:
    """A deleted netns takes its veths with it, but the kernel frees them a little later, and the
    next run makes the same names again."""

    def gone() -> bool:
        return not any(name.startswith(prefixes) for name in links())

    wait_until(gone, f"links {', '.join(prefixes)}... gone after the teardown")


def instance_tag(state_dir: str) -> str:
    """sandman.units.names.instance_tag, without importing sandman here (the benchmark may time
    another interpreter): `s` + 3 hex digits of the state dir's path."""
    path = os.path.normpath(os.path.abspath(state_dir))
    return "s" + hashlib.sha256(path.encode()).hexdigest()[:3]


def _instance_objects(tag: str, children_only: bool) -> list[str]:
    """The host objects of instance `tag`: links, cgroups (with children), its nft table."""
    found = [f"link {n}" for n in links() if n.startswith((f"{tag}-", f"{tag}b-"))]
    for top in ("", "memory", "pids", "cpu", "unified"):
        path = os.path.join("/sys/fs/cgroup", top, f"sandman-{tag}")
        if os.path.isdir(path) and (not children_only or any(e.is_dir() for e in os.scandir(path))):
            found.append(f"cgroup {path}")
    return found + ([f"table inet sandman_{tag}"] if f"sandman_{tag}" in nft_tables() else [])


@dataclass
class Instance:
    """A unit dir applied into its own state dir, whose instance tag no other sandman on the
    host uses; `sandman destroy` and a check that nothing of it is left run at the end."""

    session: Session
    units: str
    state: str

    @classmethod
    def make(cls, session: Session, name: str, units: dict[str, str]) -> Instance:
        """Write `units` (file name: text) into WORKDIR/units-NAME; a free state dir."""
        directory = os.path.join(session.workdir, f"units-{name}")
        os.makedirs(directory)
        for filename, text in units.items():
            with open(os.path.join(directory, filename), "w", encoding="utf-8") as handle:
                handle.write(text)
        for suffix in range(100):
            state = os.path.join(session.workdir, f"state-{name}-{suffix}")
            if not _instance_objects(instance_tag(state), children_only=False):
                instance = cls(session, directory, state)
                session.cleanup.add(f"sandman destroy {directory}", instance.take_down)
                return instance
        raise BenchError("no state dir under the work dir has an instance tag free on this host")

    @property
    def tag(self) -> str:
        return instance_tag(self.state)

    def argv(self, verb: str, *more: str) -> tuple[str, ...]:
        """`sandman VERB [UNITS] MORE --state-dir ...`; the unit dir for the verbs that take it."""
        where = (self.units,) if verb in ("apply", "destroy", "plan", "daemon") else ()
        return self.session.sandman(verb, *where, *more, *self.session.paths(self.state))

    def apply(self) -> None:
        self.session.run(self.argv("apply"))

    def destroy(self) -> None:
        self.session.run(self.argv("destroy"))

    def settle(self) -> None:
        wait_links_gone(f"{self.tag}-", f"{self.tag}b-")

    def check_running(self, count: int) -> None:
        report = json.loads(self.session.output(self.argv("status", "--json")))
        if (running := sum(s["state"] == "running" for s in report["sandboxes"])) != count:
            raise BenchError(f"{running} of {count} sandboxes run after apply")

    def init_pids(self, names: Sequence[str]) -> list[int]:
        """The inits' PIDs sandman recorded (STATE/sandboxes/NAME.json, runtime.pid)."""
        pids = []
        for name in names:
            with open(os.path.join(self.state, "sandboxes", f"{name}.json"), "rb") as handle:
                pids.append(int(json.load(handle)["runtime"]["pid"]))
        return pids

    def take_down(self) -> None:
        dirs = [os.path.join(self.state, kind) for kind in ("sandboxes", "networks", "slices")]
        if any(os.path.isdir(d) and any(n.endswith(".json") for n in os.listdir(d)) for d in dirs):
            self.destroy()
        with contextlib.suppress(BenchError):
            self.settle()
        if left := _instance_objects(self.tag, children_only=True):
            raise BenchError(f"left after `sandman destroy`: {', '.join(left[:5])}")


def sandbox_unit(more: str = "") -> str:
    """A sandbox unit of `sleep 1000` on the default image, with `more` below."""
    return f"[sandbox]\ncommand = {json.dumps(list(SLEEP))}\n{more}"


def networked_units(subnet: object, count: int, ports: int, more: str = "") -> dict[str, str]:
    """A network `net` (`nat = true`) and `count` sandboxes n001... on it, each with `more` and a
    port forward from 127.0.0.1:PORTS+I."""
    units = {"net.network.toml": f'[network]\nsubnet = "{subnet}"\nnat = true\n'}
    for i in range(1, count + 1):
        forward = f'host = {ports + i}, sandbox = 80, host_address = "127.0.0.1"'
        network = f'\n[network]\nattach = "net"\nports = [{{ {forward} }}]\n'
        units[f"n{i:03d}.sandbox.toml"] = sandbox_unit(more + network)
    return units


# --- imports -------------------------------------------------------------------------------------

_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+\d+ \| *(\S+)\s*$")


@dataclass(frozen=True)
class Imports:
    """One `python -X importtime` run: self time per module in ms, in import order."""

    self_ms: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.self_ms.values())

    def under(self, prefix: str) -> list[str]:
        return [m for m in self.self_ms if m == prefix or m.startswith(prefix + ".")]

    def print_packages(self, title: str, top: int = 8) -> None:
        """Self time summed per top-level package (the standard library as one)."""
        sums: dict[str, list[float]] = {}
        for module, spent in self.self_ms.items():
            package = module.split(".", maxsplit=1)[0]
            stdlib = package in sys.stdlib_module_names or package.startswith("_sysconfigdata")
            sums.setdefault("(stdlib)" if stdlib else package, []).append(spent)
        ranked = sorted(sums.items(), key=lambda item: -sum(item[1]))[:top]
        print(f"{title}: {len(self.self_ms)} modules, {self.total:.1f} ms of self time")
        print(
            table(
                ["package", "self ms", "modules"],
                [[p, f"{sum(v):.1f}", str(len(v))] for p, v in ranked],
            )
        )
