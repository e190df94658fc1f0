"""The one harness of bench/: a session, its commands, interleaved rounds, sandman instances, the
peers' common ground, and the rows of the summary table.

Every figure module times whole commands the same way, so that numbers compare across modules
and runs: `time.perf_counter()` around a child process (stdout to /dev/null, stderr to a file
read only on a failure), warm-up rounds untimed, then rounds that run every contender once in
turn (A B C, A B C, ...), so that a busy moment of the machine hits them all alike. Nothing here
asserts a time: the modules report, people judge.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
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
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
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
SLEEP = ("/bin/sleep", "1000")  # the command of every long-running benchmark sandbox
SETTLE_TIMEOUT = 60.0  # s for the kernel to free a torn-down netns's veths


class BenchError(Exception):
    """A benchmark cannot go on (a command failed, a tool is missing); the message says why."""


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _STRIPPED_ENV}
    env["LC_ALL"] = env.get("LC_ALL", "C.UTF-8")
    return env


def real_python(candidate: str | None) -> str:
    """The interpreter binary the commands run with: a pyenv shim (or any wrapper) is asked once
    for its `sys.executable`, so that its own start-up is not timed with every command; a venv's
    `bin/python` stays as it is (resolving the link would leave the venv behind)."""
    if candidate is None:
        return sys.executable
    result = subprocess.run(
        [candidate, "-c", "import sys; print(sys.executable)"],
        capture_output=True,
        text=True,
        env=clean_env(),
        check=False,
    )
    if result.returncode != 0 or not result.stdout.strip():
        raise BenchError(f"{candidate} is not a working Python: {result.stderr.strip()}")
    return result.stdout.strip()


# --- numbers and tables ---------------------------------------------------------------------


@dataclass(frozen=True)
class Stats:
    """Samples of one figure, in its unit (ms unless said)."""

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

    def __str__(self) -> str:
        return f"{ms(self.median)} ({ms(self.low)}-{ms(self.high)})"


def ms(value: float) -> str:
    return f"{value:.1f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], numbers: bool = True) -> str:
    """A plain-text table; with `numbers`, every column after the first right-aligned."""
    widths = [max(len(str(r[i])) for r in (headers, *rows)) for i in range(len(headers))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            c.rjust(w) if numbers and i else c.ljust(w)
            for i, (c, w) in enumerate(zip(map(str, cells), widths, strict=True))
        ]
        return "  ".join(padded).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *map(line, rows)])


# --- the rows of the summary table ------------------------------------------------------------

# bench/run sets this to a file; each module appends one JSON object per figure to it, and
# summary.py makes them the one table. Unset (a module run by hand), nothing is written.
RESULTS_ENV = "SANDMAN_BENCH_RESULTS"


@dataclass(frozen=True)
class Peer:
    """A peer's figure beside sandman's: a median in the row's unit, or why it is missing."""

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
    target: str = "",
    verdict: str | None = None,
    note: str = "",
) -> None:
    """Append one row of the summary table to the results file, if bench/run asked for one.

    `sandman` (or a single `value`) is sandman's figure; the ratio is its median over the median
    of the peer labelled `base`; with `limit` the verdict is `met` or `MISSED` (of the ratio, or
    of the value without a base), unless `verdict` says otherwise.
    """
    median = sandman.median if sandman is not None else value
    ratio = None
    if base is not None and median is not None:
        theirs = next((p.median for p in peers if p.label == base), None)
        ratio = median / theirs if theirs else None
    if verdict is None and limit is not None:
        achieved = median if base is None else ratio
        verdict = "not measured" if achieved is None else "met" if achieved <= limit else "MISSED"
    row = {
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
        "ratio": ratio,
        "base": base,
        "verdict": verdict or "-",
    }
    shown = f"{median:.1f} {unit}" if median is not None else "-"
    ratio_text = f", {ratio:.2f}x {base}" if ratio else ""
    print(f"  row {key}: {shown}{ratio_text}: {verdict or '-'}")
    path = os.environ.get(RESULTS_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")


# --- commands ----------------------------------------------------------------------------------


class Runner:
    """Runs a session's commands in its work dir with a clean environment: stdout to /dev/null,
    stderr to a file read on a failure (a pipe would have to be drained while the command runs,
    and be timed with it)."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.env = clean_env()
        path = os.path.join(workdir, "stderr")
        self.err = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    def run(self, argv: Sequence[str]) -> None:
        os.ftruncate(self.err, 0)
        os.lseek(self.err, 0, os.SEEK_SET)
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.err,
            env=self.env,
            cwd=self.workdir,
        )
        try:
            code = process.wait()
        except KeyboardInterrupt:
            _stop_gently(process)
            raise
        if code != 0:
            raise BenchError(f"`{' '.join(argv)}` exited with {code}:\n{self._stderr()}")

    def output(self, argv: Sequence[str]) -> str:
        """Stdout of an untimed command."""
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.workdir,
            check=False,
        )
        if result.returncode != 0:
            raise BenchError(f"`{' '.join(argv)}` exited with {result.returncode}: {result.stderr}")
        return result.stdout

    def _stderr(self) -> str:
        os.lseek(self.err, 0, os.SEEK_SET)
        with os.fdopen(os.dup(self.err), "rb") as handle:
            lines = handle.read().decode(errors="replace").strip().splitlines()
        return "\n".join(lines[-20:]) or "(no output on stderr)"

    def close(self) -> None:
        os.close(self.err)


def _stop_gently(process: subprocess.Popen[bytes]) -> None:
    """After Ctrl-C or SIGTERM: 2 s to end on its own, then SIGINT (sandman undoes a half-made
    sandbox; a `sandman apply` killed outright could leave one it has not recorded), 30 s, then
    SIGKILL."""
    for signum, grace in ((None, 2.0), (signal.SIGINT, 30.0), (signal.SIGKILL, None)):
        if signum is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
        with contextlib.suppress(subprocess.TimeoutExpired, KeyboardInterrupt):
            process.wait(timeout=grace)
            return


# --- rounds ------------------------------------------------------------------------------------


def _nothing() -> None:
    pass


def _nothing_kept(keep: bool) -> None:
    pass


@dataclass
class Trial:
    """One contender, run once per round: `start` timed; `stop` after it, timed apart when
    `timed_stop`; `settle` untimed last. `before` and `after` run untimed around `start` (a
    census), inside `context` (a mount namespace). A failed trial that is not `required` is left
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
    after: Callable[[bool], None] = _nothing_kept
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
            wall = [(middle - started) * 1000.0]
            self.up.extend(self.own_times() if self.own_times is not None else wall)
            if self.timed_stop:
                self.down.append((ended - stopping) * 1000.0)

    @property
    def stats(self) -> Stats | None:
        return Stats(tuple(self.up)) if self.up and self.error is None else None

    def peer(self, label: str) -> Peer:
        """This trial as a peer of a summary row: its median, or why there is none."""
        if self.stats is not None:
            return Peer(label, self.stats.median)
        return Peer(label, why=f"n/a: {(self.error or 'not run').splitlines()[-1][:80]}")


def run_rounds(trials: Sequence[Trial], runs: int, warmups: int) -> None:
    """`warmups` untimed rounds, then `runs` timed ones; a trial with fewer `rounds` sits the
    last ones out. Progress goes to stderr when it is a terminal."""
    total = warmups + runs
    for index in range(total):
        if sys.stderr.isatty():
            print(f"\r  round {index + 1}/{total}  ", end="", file=sys.stderr, flush=True)
        keep = index >= warmups
        for trial in trials:
            if not keep or trial.rounds is None or index - warmups < trial.rounds:
                trial.once(keep)
    if sys.stderr.isatty():
        print("\r" + " " * 30 + "\r", end="", file=sys.stderr, flush=True)


def command(runner: Runner, label: str, argv: Sequence[str]) -> Trial:
    """A trial of one whole command."""
    return Trial(label, lambda: runner.run(argv))


def print_trials(trials: Sequence[Trial]) -> None:
    """Every contender's own times, in ms: median (min-max), and the teardown when timed."""
    rows = []
    for t in trials:
        down = str(Stats(tuple(t.down))) if t.down else ""
        rows.append([t.label, str(t.stats or f"failed: {t.error}"), down, str(len(t.up))])
    print(table(["contender", "ms, median (min-max)", "teardown ms", "runs"], rows))


# --- the session ---------------------------------------------------------------------------------


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


@dataclass
class Session:
    """A benchmark's run: the interpreter timed, a temporary work dir, the runner of its
    commands, the clean-up, and the busybox image every contender runs on."""

    args: argparse.Namespace
    python: str
    workdir: str
    runner: Runner
    cleanup: Cleanup
    images: str = ""

    def sandman(self, *args: str) -> tuple[str, ...]:
        return (self.python, "-m", "sandman", *args)

    def paths(self, state: str) -> tuple[str, ...]:
        logs = os.path.join(self.workdir, "logs")
        return ("--state-dir", state, "--image-dir", self.images, "--log-dir", logs)

    def image(self) -> str:
        """`sandman image busybox` into the work dir; returns the rootfs every contender uses."""
        self.images = os.path.join(self.workdir, "images")
        self.runner.output(self.sandman("image", "busybox", "--image-dir", self.images))
        return os.path.join(self.images, "busybox")


def options(description: str, runs: int, warmups: int = 1) -> argparse.ArgumentParser:
    """The options every module takes; a module adds its own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--runs", type=int, default=runs, help=f"timed rounds (default {runs})")
    parser.add_argument(
        "--warmups", type=int, default=warmups, help=f"untimed rounds first (default {warmups})"
    )
    parser.add_argument("--python", metavar="PATH", help="the interpreter timed (default: this)")
    return parser


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(
    name: str,
    parser: argparse.ArgumentParser,
    body: Callable[[Session], None],
    argv: Sequence[str] | None = None,
    root: bool = True,
) -> int:
    """Parse the options, then run `body` in a new session: a temporary work dir and a Cleanup
    whose steps run at the end, on an error and on Ctrl-C or SIGTERM; the dir is removed last,
    or kept (and said so) when a step failed. Errors and interrupts become a message and an exit
    code, never a traceback; without root a root benchmark says it skipped itself."""
    args = parser.parse_args(argv)
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
        runner = Runner(workdir)
        cleanup.add("the stderr file", runner.close)
        python = real_python(args.python)
        body(Session(args, python, workdir, runner, cleanup))
    except (BenchError, OSError, ValueError, subprocess.CalledProcessError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        return 130
    finally:
        cleanup.run()
    return 1 if cleanup.failed else 0


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


def restore_at_end(cleanup: Cleanup, path: str) -> None:
    """Write a /proc/sys file's present value back at the end, if it has changed by then."""
    with open(path, encoding="ascii") as handle:
        value = handle.read()

    def restore() -> None:
        with open(path, encoding="ascii") as f:
            if f.read() == value:
                return
        with open(path, "w", encoding="ascii") as f:
            f.write(value)

    cleanup.add(f"restore {path}", restore)


# --- sandman instances ---------------------------------------------------------------------------


def links() -> list[str]:
    return os.listdir("/sys/class/net")


def nft_tables() -> str:
    if shutil.which("nft") is None:
        return ""
    argv = ["nft", "list", "tables"]
    return subprocess.run(argv, capture_output=True, text=True, check=False).stdout


def wait_links_gone(*prefixes: str) -> None:
    """Until no link name starts with a prefix: a deleted netns takes its veths with it, but the
    kernel frees them a little later, and the next run makes the same names again."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while left := [name for name in links() if name.startswith(prefixes)]:
        if time.monotonic() > deadline:
            raise BenchError(f"links still there {SETTLE_TIMEOUT:.0f} s after teardown: {left[:5]}")
        time.sleep(0.01)


def instance_tag(state_dir: str) -> str:
    """sandman.units.names.instance_tag, without importing sandman here (the benchmark may time
    another interpreter): `s` + 3 hex digits of the state dir's path."""
    path = os.path.normpath(os.path.abspath(state_dir))
    return "s" + hashlib.sha256(path.encode()).hexdigest()[:3]


CGROUP_TOPS = ("", "memory", "pids", "cpu", "unified")


def _instance_objects(tag: str, children_only: bool) -> list[str]:
    """The host objects of instance `tag`: links, cgroups (with children), its nft table."""
    found = [f"link {n}" for n in links() if n.startswith((f"{tag}-", f"{tag}b-"))]
    for top in CGROUP_TOPS:
        path = os.path.join("/sys/fs/cgroup", top, f"sandman-{tag}")
        if os.path.isdir(path) and (not children_only or any(e.is_dir() for e in os.scandir(path))):
            found.append(f"cgroup {path}")
    if f"sandman_{tag}" in nft_tables():
        found.append(f"table inet sandman_{tag}")
    return found


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
        where = (self.units,) if verb in ("apply", "destroy", "plan") else ()
        return self.session.sandman(verb, *where, *more, *self.session.paths(self.state))

    def apply(self) -> None:
        self.session.runner.run(self.argv("apply"))

    def destroy(self) -> None:
        self.session.runner.run(self.argv("destroy"))

    def settle(self) -> None:
        wait_links_gone(f"{self.tag}-", f"{self.tag}b-")

    def init_pids(self, names: Sequence[str]) -> list[int]:
        """The inits' PIDs sandman recorded (STATE/sandboxes/NAME.json, runtime.pid)."""
        pids = []
        for name in names:
            with open(os.path.join(self.state, "sandboxes", f"{name}.json"), "rb") as handle:
                pids.append(int(json.load(handle)["runtime"]["pid"]))
        return pids

    def take_down(self) -> None:
        kinds = ("sandboxes", "networks", "slices")
        dirs = [os.path.join(self.state, kind) for kind in kinds]
        if any(os.path.isdir(d) and any(n.endswith(".json") for n in os.listdir(d)) for d in dirs):
            self.destroy()
        with contextlib.suppress(BenchError):
            self.settle()
        left = _instance_objects(self.tag, children_only=True)
        if left:
            raise BenchError(f"left after `sandman destroy`: {', '.join(left[:5])}")


def sandbox_unit(more: str = "") -> str:
    """A sandbox unit of `sleep 1000` on the default image, with `more` below."""
    return f"[sandbox]\ncommand = {json.dumps(list(SLEEP))}\n{more}"


# --- imports ---------------------------------------------------------------------------------

_IMPORT_LINE = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)\s*$")


@dataclass(frozen=True)
class Imports:
    """One `python -X importtime` run: self time per module in ms, in import order."""

    self_ms: dict[str, float]

    @property
    def total(self) -> float:
        return sum(self.self_ms.values())

    def under(self, prefix: str) -> list[str]:
        return [m for m in self.self_ms if m == prefix or m.startswith(prefix + ".")]

    def by_package(self) -> list[tuple[str, float, int]]:
        """Self time summed per top-level package (the standard library as one): (name, ms, n)."""
        sums: dict[str, list[float]] = {}
        for module, spent in self.self_ms.items():
            top = module.split(".", maxsplit=1)[0]
            stdlib = top in sys.stdlib_module_names or top.startswith("_sysconfigdata")
            sums.setdefault("(stdlib)" if stdlib else top, []).append(spent)
        return sorted(((p, sum(v), len(v)) for p, v in sums.items()), key=lambda r: -r[1])


def importtime(session: Session, args: Sequence[str], runs: int = 3) -> Imports:
    """`python -X importtime ARGS`, `runs` times: each module's median self time."""
    times: dict[str, list[float]] = {}
    for _ in range(runs):
        argv = (session.python, "-X", "importtime", *args)
        result = subprocess.run(
            argv, capture_output=True, text=True, env=clean_env(), cwd=session.workdir, check=False
        )
        found = [_IMPORT_LINE.match(line) for line in result.stderr.splitlines()]
        if result.returncode != 0 or not any(found):
            tail = "\n".join(result.stderr.splitlines()[-5:])
            raise BenchError(f"python -X importtime {' '.join(args)} failed:\n{tail}")
        for match in filter(None, found):
            times.setdefault(match[4], []).append(int(match[1]) / 1000)
    return Imports({m: statistics.median(v) for m, v in times.items()})


def print_packages(title: str, imports: Imports, top: int = 8) -> None:
    print(f"{title}: {len(imports.self_ms)} modules, {ms(imports.total)} ms of self time")
    rows = [[p, ms(t), str(n)] for p, t, n in imports.by_package()[:top]]
    print(table(["package", "self ms", "modules"], rows))


# --- the peers' common ground -------------------------------------------------------------

UNIFIED = "/sys/fs/cgroup/unified"
CLONE_NEWNS = 0x00020000


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


def bwrap_true(rootfs: str, *flags: str) -> tuple[str, ...]:
    """bwrap's run of /bin/true on the rootfs, with /proc and /dev, after `flags`."""
    return ("bwrap", *flags, "--bind", rootfs, "/", "--proc", "/proc", "--dev", "/dev", "/bin/true")


def crun_bundle(session: Session, rootfs: str) -> str:
    """`crun spec`'s config.json, adjusted: `sleep 1000`, no terminal, the rootfs, writable
    (namespaces pid, network, ipc, uts, mount; no user namespace)."""
    bundle = os.path.join(session.workdir, "bundle")
    os.mkdir(bundle)
    subprocess.run(["crun", "spec"], cwd=bundle, capture_output=True, check=True)
    path = os.path.join(bundle, "config.json")
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    config["process"]["args"] = list(SLEEP)
    config["process"]["terminal"] = False
    config["root"] = {"path": rootfs, "readonly": False}
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=1)
    return bundle


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNS) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


class CrunMounts:
    """Where crun runs: on a v1/v2 hybrid host, which crun refuses (even with
    --cgroup-manager=disabled), a mount namespace like the host's without
    /sys/fs/cgroup/unified, held by an fd; the benchmark enters it with setns around crun's runs,
    untimed, so that crun starts as a plain child with no wrapper timed with it, while sandman
    keeps the host's namespace. Elsewhere the host's namespace."""

    def __init__(self, session: Session) -> None:
        self.fd: int | None = None
        if cgroup_layout() != "hybrid":
            return
        script = f"umount {UNIFIED} && echo ready && exec sleep 600"
        holder = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=clean_env(),
        )
        try:
            assert holder.stdout is not None and holder.stderr is not None
            if holder.stdout.readline().strip() != "ready":
                holder.wait()
                raise BenchError(f"cannot unmount {UNIFIED}: {holder.stderr.read().strip()}")
            self.fd = os.open(f"/proc/{holder.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            holder.kill()
            holder.communicate()
        session.cleanup.add("the private mount namespace", lambda: os.close(self.fd or -1))

    def where(self) -> str:
        if self.fd is None:
            return "in the host's mount namespace"
        return f"in a private mount namespace without {UNIFIED} (a hybrid host: crun refuses it)"

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        if self.fd is None:
            yield
            return
        cwd = os.getcwd()
        host = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        _setns(self.fd)
        try:
            os.chdir(cwd)
            yield
        finally:
            _setns(host)
            os.close(host)
            os.chdir(cwd)
