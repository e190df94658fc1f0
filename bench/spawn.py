"""The spawn benchmark: from `sandman apply` to the init running, beside crun, bwrap, nspawn.

`python bench/spawn.py [--runs 5] [--runs-many 3] [--warmups 1] [--python PATH] [--no-install]`

As root. It builds the busybox image with `sandman image busybox` into a temporary directory, and
every tool runs on that one rootfs. In one session, interleaved, it times whole processes:

- `python -m sandman apply DIR` of 1 sandbox and of 50 (`/bin/sleep 1000`, default namespaces, no
  `[network]`): sandman returns once the init has exec'd;
- `crun run -d` of a bundle made with `crun spec` (args `sleep 1000`, no terminal, the rootfs,
  writable), once and 50 times in a row;
- `bwrap --unshare-all ... /bin/true` and `systemd-nspawn ... /bin/true` to their exit: neither
  can leave a sandbox running and return;

each followed, untimed, by `sandman destroy DIR` or `crun delete -f`. Right after each detached run
a census of /proc (census.py) checks that the inits run the command already and counts the host
processes that exist only because of the sandboxes: their resident memory, per sandbox, is the
memory figure. It prints one table with the issue's targets, then a cProfile of one `apply`
(profile_cli.py) and its imports (`python -X importtime`). Missing peers are installed with
apt-get (not with `--no-install`); a peer that cannot be installed or run is reported and left
out. It reports and never fails on a time; everything it makes is removed at the end, on error
and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import ctypes
import json
import marshal
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from census import Census, Snapshot, census, median_init_rss, read_proc, snapshot
from common import (
    UNIFIED,
    BenchError,
    Cleanup,
    Peer,
    Stats,
    busybox_image,
    bwrap_true,
    cgroup_layout,
    clean_env,
    describe_host,
    emit,
    in_workdir,
    module_version,
    ms,
    parse_rounds,
    real_python,
    require_modules,
    round_options,
    run_main,
    table,
)
from load import ImportSummary, importtime
from strace_summary import summarise

MANY = 50
MANY_NAMES = tuple(f"s{n:02d}" for n in range(1, MANY + 1))
COMMAND = ("/bin/sleep", "1000")
NSPAWN_LIMIT = 2.0
CRUN_LIMIT = 1.0
TARGET = (
    "one sandbox within 2x of systemd-nspawn's time; 50 sandboxes within 1.0x of 50 `crun run`s; "
    "zero bytes of resident sandman memory per running sandbox"
)
# The peers and the Debian packages that bring them.
PACKAGES = {
    "crun": "crun",
    "runc": "runc",
    "lxc-execute": "lxc",
    "bwrap": "bubblewrap",
    "systemd-nspawn": "systemd-container",
}
BWRAP_FLAGS = ("--unshare-all", "--die-with-parent")
# --register=no --keep-unit: no machined and no transient scope (systemd is not PID 1 here);
# --pipe: no pty; the rest keep nspawn from writing resolv.conf, localtime and a journal
# directory into the shared rootfs.
NSPAWN_FLAGS = (
    "--quiet",
    "--register=no",
    "--keep-unit",
    "--pipe",
    "--resolv-conf=off",
    "--timezone=off",
    "--link-journal=no",
)
CLONE_NEWNS = 0x00020000
IMPORTTIME_RUNS = 3

SANDMAN_1 = "sandman apply, 1 sandbox"
SANDMAN_N = f"sandman apply, {MANY} sandboxes"
CRUN_1 = "crun run -d"
CRUN_N = f"{MANY} x crun run -d"
BWRAP = "bwrap /bin/true"
NSPAWN = "systemd-nspawn /bin/true"
RUNC_1 = "runc run -d"
LXC = "lxc-execute /bin/true"
PASS = "python -c pass"
VALIDATE = "sandman validate DIR (1 unit)"


class StepError(Exception):
    """A command of a run failed; the message holds its stderr."""


class Runner:
    """Runs the commands of the benchmark: stdout to /dev/null, stderr to a file read on failure
    (a pipe would have to be drained while the command runs, and be timed with it)."""

    def __init__(self, workdir: str) -> None:
        self.workdir = workdir
        self.env = clean_env()
        path = os.path.join(workdir, "stderr")
        self.err = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)

    def reset(self) -> None:
        os.ftruncate(self.err, 0)
        os.lseek(self.err, 0, os.SEEK_SET)

    def run(self, argv: Sequence[str], fresh: bool = False) -> None:
        if fresh:
            self.reset()
        # Popen and wait, as subprocess.run does, but an interruption lets the command finish:
        # a `sandman apply` killed outright could leave a sandbox it has not recorded yet.
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self.err,
            env=self.env,
            cwd=self.workdir,
        )
        try:
            returncode = process.wait()
        except KeyboardInterrupt:
            _stop_gently(process)
            raise
        if returncode != 0:
            raise StepError(f"`{' '.join(argv)}` exited with {returncode}:\n{self.text()}")

    def output(self, argv: Sequence[str]) -> str:
        """Stdout of an untimed helper command; failures raise StepError."""
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
            raise StepError(f"`{' '.join(argv)}` exited with {result.returncode}: {result.stderr}")
        return result.stdout

    def text(self) -> str:
        os.lseek(self.err, 0, os.SEEK_SET)
        chunks = []
        while chunk := os.read(self.err, 65536):
            chunks.append(chunk)
        lines = b"".join(chunks).decode(errors="replace").strip().splitlines()
        return "\n".join(lines[-20:]) or "(no output on stderr)"

    def close(self) -> None:
        os.close(self.err)


def _stop_gently(process: subprocess.Popen[bytes]) -> None:
    """After Ctrl-C (which the command got too, from the terminal) or SIGTERM (which it did
    not): give it 2 s to end on its own, then SIGINT (sandman undoes a half-made sandbox), then
    30 s, then SIGKILL."""
    for signum, grace in ((None, 2.0), (signal.SIGINT, 30.0), (signal.SIGKILL, None)):
        if signum is not None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signum)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
        except KeyboardInterrupt:
            continue  # a second Ctrl-C: go on to the next, harder signal


# --- the peers ------------------------------------------------------------------------------


def install_peers(allowed: bool) -> tuple[dict[str, str], list[str]]:
    """Install the missing peers from Debian; returns (tool: why it is missing, notes)."""
    missing = {tool: pkg for tool, pkg in PACKAGES.items() if shutil.which(tool) is None}
    if not missing:
        return {}, []
    packages = sorted(set(missing.values()))
    if not allowed:
        why = "not installed (--no-install given)"
        return {tool: f"{why}; `apt-get install {pkg}`" for tool, pkg in missing.items()}, []
    if shutil.which("apt-get") is None:
        return {tool: "not installed, and there is no apt-get" for tool in missing}, []
    env = {**clean_env(), "DEBIAN_FRONTEND": "noninteractive"}
    notes = []
    known = subprocess.run(
        ["apt-cache", "show", *packages], capture_output=True, env=env, check=False
    )
    if known.returncode != 0:
        notes.append("apt-get update (apt-cache does not know the packages)")
        _progress("apt-get update")
        subprocess.run(["apt-get", "update", "-q"], capture_output=True, env=env, check=False)
    _progress(f"apt-get install -y {' '.join(packages)}")
    result = subprocess.run(
        ["apt-get", "install", "-y", "-q", *packages],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    reasons = {}
    for tool, pkg in missing.items():
        if shutil.which(tool) is None:
            tail = " ".join((result.stderr or result.stdout).strip().splitlines()[-2:])
            reasons[tool] = f"`apt-get install -y {pkg}` failed (exit {result.returncode}): {tail}"
        else:
            notes.append(f"installed {pkg} (apt-get install -y)")
    return reasons, notes


def tool_version(argv: Sequence[str]) -> str:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
    except OSError:
        return "?"
    return (result.stdout or result.stderr).strip().splitlines()[0] if result.stdout else "?"


_libc = ctypes.CDLL(None, use_errno=True)


def _setns(fd: int, nstype: int) -> None:
    if _libc.setns(fd, nstype) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns: {os.strerror(errno)}")


class PrivateMounts:
    """A mount namespace like the host's without /sys/fs/cgroup/unified, held by an fd.

    crun refuses the v1/v2 hybrid layout. The benchmark's own process enters this namespace
    around crun's runs (setns, untimed) and returns to the host's after: crun then starts as a
    plain child, with no wrapper (`unshare`, `nsenter`) or pre-exec hook timed with it, while
    sandman keeps running in the host's namespace.
    """

    def __init__(self, fd: int) -> None:
        self.fd = fd
        self.host = os.open("/proc/self/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)

    @classmethod
    def make(cls) -> PrivateMounts:
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
            assert holder.stdout is not None
            if holder.stdout.readline().strip() != "ready":
                holder.wait()
                assert holder.stderr is not None
                raise StepError(
                    f"cannot unmount {UNIFIED} in a new mount namespace: "
                    f"{holder.stderr.read().strip()}"
                )
            fd = os.open(f"/proc/{holder.pid}/ns/mnt", os.O_RDONLY | os.O_CLOEXEC)
        finally:
            holder.kill()
            holder.communicate()
        return cls(fd)

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        cwd = os.getcwd()
        _setns(self.fd, CLONE_NEWNS)
        try:
            os.chdir(cwd)
            yield
        finally:
            _setns(self.host, CLONE_NEWNS)
            os.chdir(cwd)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self.host)


@dataclass
class Crun:
    runner: Runner
    root: str  # crun's state dir (--root), under the temporary directory
    bundle: str
    mounts: PrivateMounts | None

    def context(self) -> contextlib.AbstractContextManager[None]:
        return self.mounts.entered() if self.mounts is not None else contextlib.nullcontext()

    def start(self, ids: Sequence[str]) -> None:
        for ident in ids:
            self.runner.run(
                ("crun", "--root", self.root, "run", "-d", "--bundle", self.bundle, ident)
            )

    def init_pids(self, ids: Sequence[str]) -> list[int]:
        pids = []
        for ident in ids:
            state = json.loads(self.runner.output(("crun", "--root", self.root, "state", ident)))
            pids.append(int(state["pid"]))
        return pids

    def delete_all(self) -> None:
        listed = self.runner.output(("crun", "--root", self.root, "list", "-q")).split()
        for ident in listed:
            self.runner.run(("crun", "--root", self.root, "delete", "-f", ident), fresh=True)


def make_bundle(runner: Runner, workdir: str, rootfs: str) -> str:
    """`crun spec`'s config.json, adjusted: the command, no terminal, the rootfs, writable."""
    bundle = os.path.join(workdir, "bundle")
    os.mkdir(bundle)
    subprocess.run(["crun", "spec"], cwd=bundle, capture_output=True, check=True)
    path = os.path.join(bundle, "config.json")
    with open(path, encoding="utf-8") as handle:
        config = json.load(handle)
    config["process"]["args"] = list(COMMAND)
    config["process"]["terminal"] = False
    config["root"] = {"path": rootfs, "readonly": False}
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(config, handle, indent=1)
    return bundle


def crun_namespaces(bundle: str) -> str:
    with open(os.path.join(bundle, "config.json"), encoding="utf-8") as handle:
        config = json.load(handle)
    return " ".join(ns["type"] for ns in config.get("linux", {}).get("namespaces", []))


# --- trials and rounds ----------------------------------------------------------------------


def _nothing() -> None:
    pass


@dataclass
class Trial:
    """One way of starting sandboxes, run once per round: `start` is timed, `stop` is not."""

    label: str
    count: int  # sandboxes one run starts
    rounds: int
    start: Callable[[], None]
    stop: Callable[[], None] = _nothing
    detached: bool = True  # leaves the sandboxes running: the census applies
    required: bool = False  # a failure ends the benchmark (sandman's own runs)
    context: Callable[[], contextlib.AbstractContextManager[None]] = contextlib.nullcontext
    inits: Callable[[], list[int]] = list  # the PIDs of the inits a run started, untimed
    samples: list[float] = field(default_factory=list)
    censuses: list[Census] = field(default_factory=list)
    error: str | None = None

    @property
    def stats(self) -> Stats | None:
        return Stats(tuple(self.samples)) if self.samples and self.error is None else None


def run_trial(trial: Trial, runner: Runner, keep: bool, marker: str) -> None:
    if trial.error is not None:
        return
    runner.reset()
    elapsed = 0.0
    taken: Census | None = None
    try:
        with trial.context():
            before: Snapshot = snapshot() if trial.detached else {}
            try:
                started = time.perf_counter()
                trial.start()
                elapsed = (time.perf_counter() - started) * 1000.0
                if trial.detached:
                    after = snapshot()
                    taken = census(
                        before,
                        after,
                        init_pids=trial.inits(),
                        command=COMMAND,
                        marker=marker,
                        count=trial.count,
                    )
            finally:
                trial.stop()
    except StepError as exc:
        if trial.required:
            raise BenchError(f"{trial.label} failed: {exc}") from None
        trial.error = str(exc)
        return
    if keep:
        trial.samples.append(elapsed)
        if taken is not None:
            trial.censuses.append(taken)


def run_rounds(trials: Sequence[Trial], runner: Runner, warmups: int) -> None:
    marker = runner.workdir
    progress = sys.stderr.isatty()
    for index in range(warmups):
        if progress:
            _progress(f"warm-up {index + 1}/{warmups}", end="")
        for trial in trials:
            run_trial(trial, runner, False, marker)
    rounds = max(trial.rounds for trial in trials)
    for index in range(rounds):
        if progress:
            _progress(f"round {index + 1}/{rounds}", end="")
        for trial in trials:
            if index < trial.rounds:
                run_trial(trial, runner, True, marker)
    if progress:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)


def _progress(text: str, end: str = "\n") -> None:
    if end:
        print(f"  {text}", file=sys.stderr, flush=True)
    else:
        print(f"\r  {text}" + " " * 10, end="", file=sys.stderr, flush=True)


# --- the report -----------------------------------------------------------------------------


def _timing(stats: Stats | None) -> str:
    if stats is None:
        return "-"
    return f"{ms(stats.median)} ({ms(stats.low)}-{ms(stats.high)})"


def _why(trial: Trial | None) -> str:
    return "not measured" if trial is None or trial.error is None else "failed"


def _memory(trial: Trial | None) -> str:
    if trial is None or not trial.censuses:
        return "-"
    return f"{max(c.bytes_per_sandbox for c in trial.censuses):.0f} B"


@dataclass(frozen=True)
class Row:
    figure: str
    sandman: Trial
    peer_label: str
    peer: Trial | None
    limit: float | None = None


def _verdict(achieved: float | None, limit: float | None) -> str:
    if limit is None:
        return "-"
    if achieved is None:
        return f"<= {limit:.2f}x: not measured"
    return f"<= {limit:.2f}x: {'met' if achieved <= limit else 'MISSED'}"


def report_table(trials: dict[str, Trial | None]) -> str:
    s1, sn = trials[SANDMAN_1], trials[SANDMAN_N]
    assert s1 is not None and sn is not None
    rows = [
        Row("1 sandbox, to the init running", s1, "crun run -d", trials[CRUN_1]),
        Row("1 sandbox", s1, "systemd-nspawn, /bin/true to exit", trials[NSPAWN], NSPAWN_LIMIT),
        Row("1 sandbox", s1, "bwrap, /bin/true to exit", trials[BWRAP]),
        Row("1 sandbox", s1, "runc run -d", trials.get(RUNC_1)),
        Row("1 sandbox", s1, "lxc-execute, /bin/true to exit", trials.get(LXC)),
        Row(f"{MANY} sandboxes, to all inits running", sn, CRUN_N, trials[CRUN_N], CRUN_LIMIT),
    ]
    cells = []
    for row in rows:
        peer = row.peer.stats if row.peer is not None else None
        mine = row.sandman.stats
        achieved = mine.median / peer.median if peer is not None and mine is not None else None
        cells.append(
            [
                row.figure,
                _timing(mine),
                row.peer_label,
                _timing(peer) if peer is not None else _why(row.peer),
                f"{achieved:.2f}x" if achieved is not None else "-",
                _verdict(achieved, row.limit),
            ]
        )
    for count, own, other in ((1, s1, trials[CRUN_1]), (MANY, sn, trials[CRUN_N])):
        worst = max((c.bytes_per_sandbox for c in own.censuses), default=None)
        verdict = "-" if worst is None else ("0 B: met" if worst == 0 else "0 B: MISSED")
        theirs_text = _memory(other) if other is not None and other.censuses else _why(other)
        label = "crun run -d" if count == 1 else CRUN_N
        cells.append(
            [
                f"host memory per sandbox ({count} running)",
                _memory(own),
                label,
                theirs_text,
                "-",
                verdict,
            ]
        )
    crun1 = trials[CRUN_1]
    theirs_rss = median_init_rss(crun1.censuses) if crun1 is not None else None
    mine_rss = median_init_rss([*s1.censuses, *sn.censuses])
    cells.append(
        [
            "the sandbox's own init, RSS (info)",
            "-" if mine_rss is None else f"{mine_rss} B",
            "crun run -d",
            "-" if theirs_rss is None else f"{theirs_rss} B",
            "-",
            "-",
        ]
    )
    headers = [
        "figure",
        "sandman ms (min-max)",
        "peer",
        "peer ms (min-max)",
        "sandman/peer",
        "target",
    ]
    return table(headers, cells, right=(1, 3, 4))


def targets_report(trials: dict[str, Trial | None]) -> str:
    lines = [f"target (issue): {TARGET}"]
    s1, sn = trials[SANDMAN_1], trials[SANDMAN_N]
    assert s1 is not None and sn is not None
    for mine, peer_label, limit in ((s1, NSPAWN, NSPAWN_LIMIT), (sn, CRUN_N, CRUN_LIMIT)):
        peer = trials[peer_label]
        theirs, ours = (peer.stats if peer is not None else None), mine.stats
        if theirs is None or ours is None:
            why = peer.error if peer is not None and peer.error else "peer unavailable"
            lines.append(f"  {mine.label} / {peer_label}: not measured ({why.splitlines()[0]})")
            continue
        achieved = ours.median / theirs.median
        verdict = "met" if achieved <= limit else "MISSED"
        need = limit * theirs.median
        lines.append(
            f"  {mine.label}: {ms(ours.median)} ms / {peer_label} {ms(theirs.median)} ms = "
            f"{achieved:.2f}x, limit {limit:.2f}x: {verdict}"
            + (
                f" (needs <= {ms(need)} ms, {ms(ours.median - need)} ms from now)"
                if verdict == "MISSED"
                else f" (headroom {ms(need - ours.median)} ms)"
            )
        )
    worst = max((c.bytes_per_sandbox for c in (*s1.censuses, *sn.censuses)), default=None)
    lines.append(
        "  resident sandman memory per running sandbox: "
        + (
            "not measured"
            if worst is None
            else f"{worst:.0f} B, limit 0 B: " + ("met" if worst == 0 else "MISSED")
        )
    )
    return "\n".join(lines)


def details_report(trials: dict[str, Trial | None], floor: Trial) -> str:
    lines = []
    s1, sn = trials[SANDMAN_1], trials[SANDMAN_N]
    assert s1 is not None and sn is not None
    if floor.stats is not None:
        lines.append(
            f"{PASS} (the interpreter alone, floor of every sandman run): {_timing(floor.stats)} ms"
        )
    validate = trials[VALIDATE]
    if validate is not None and validate.stats is not None:
        lines.append(
            f"`python -m {VALIDATE}` (interpreter, CLI, load path; nothing applied): "
            f"{_timing(validate.stats)} ms"
        )
    one, many = s1.stats, sn.stats
    if one is not None and many is not None:
        each = (many.median - one.median) / (MANY - 1)
        lines.append(
            f"sandman per sandbox: ({ms(many.median)} - {ms(one.median)}) / {MANY - 1} = "
            f"{ms(each)} ms each after the first; fixed part of a run about "
            f"{ms(one.median - each)} ms"
        )
    crun_n = trials[CRUN_N]
    if crun_n is not None and crun_n.stats is not None:
        lines.append(f"crun per sandbox: {ms(crun_n.stats.median / MANY)} ms")
    lines.append("")
    lines.append(
        "right after each detached run returned, a census of /proc (bench/census.py), with the "
        "inits the tool reports (sandman's records, `crun state`):"
    )
    for label in (SANDMAN_1, SANDMAN_N, CRUN_1, CRUN_N):
        trial = trials[label]
        if trial is None or not trial.censuses:
            continue
        lines.extend(_census_lines(trial))
    failed = [t for t in trials.values() if t is not None and t.error]
    for trial in failed:
        lines.append(f"{trial.label}: failed, left out: {trial.error}")
    return "\n".join(lines)


def _census_lines(trial: Trial) -> list[str]:
    censuses = trial.censuses
    ok = sum(c.all_running for c in censuses)
    parents = sorted({p for c in censuses for p in c.parents})
    worst = max(censuses, key=lambda c: c.extra_bytes)
    shown = "; ".join(p.describe() for p in worst.extra[:4]) or "none"
    lines = [
        f"  {trial.label}: in {ok}/{len(censuses)} runs all {trial.count} inits already ran "
        f"`{' '.join(COMMAND)}` (exec done); inits' parent: {', '.join(parents) or '?'}",
        f"    host processes there because of the sandboxes, worst run: {len(worst.extra)}, "
        f"{worst.extra_bytes} B ({shown})",
    ]
    most = max(censuses, key=lambda c: len(c.zombies))
    if most.zombies:
        kinds = collections.Counter(f"{z.comm} (parent {z.ppid})" for z in most.zombies)
        text = ", ".join(f"{n} x {kind}" for kind, n in kinds.most_common(3))
        lines.append(
            f"    new zombies (exited, not yet reaped by their parent; no memory), most in a run: "
            f"{len(most.zombies)}: {text}"
        )
    unrelated = max(c.unrelated for c in censuses)
    if unrelated:
        lines.append(
            f"    ignored: up to {unrelated} new process(es) unrelated to the run (other work on "
            "this machine)"
        )
    return lines


# --- the profile ----------------------------------------------------------------------------

Label = tuple[str, int, str]

# (row, depth, [(file suffix, function)]): the phases of one apply, as cumulative times.
PHASES: tuple[tuple[str, int, tuple[tuple[str, str], ...]], ...] = (
    (
        "imports (every import statement, wherever it runs)",
        0,
        (("<frozen importlib._bootstrap>", "_find_and_load"),),
    ),
    (
        "commands/apply.run (the verb, after its module's imports)",
        0,
        (("sandman/commands/apply.py", "run"),),
    ),
    ("state lock", 1, (("sandman/apply/lock.py", "state_lock"),)),
    ("observe: gather the records", 1, (("sandman/observe/gather.py", "gather"),)),
    ("load the units (read_units)", 1, (("sandman/units/read.py", "read_units"),)),
    ("plan", 1, (("sandman/plan/diff.py", "plan"),)),
    ("apply the plan (applier.apply)", 1, (("sandman/apply/applier.py", "apply"),)),
    ("rootfs dirs (_rootfs_plan)", 2, (("sandman/apply/sandboxes.py", "_rootfs_plan"),)),
    (
        "cgroup driver, create, limits",
        2,
        (
            ("sandman/apply/context.py", "cgroups"),
            ("sandman/kernel/cgroup_v1.py", "create"),
            ("sandman/kernel/cgroup_v2.py", "create"),
            ("sandman/kernel/cgroup_v1.py", "set_limits"),
            ("sandman/kernel/cgroup_v2.py", "set_limits"),
        ),
    ),
    (
        "spawn (kernel/spawn.start, finish; the user namespace is made in the first child)",
        2,
        (("sandman/kernel/spawn.py", "start"), ("sandman/kernel/spawn.py", "finish")),
    ),
    (
        "fork, wait for the children (namespaces, mounts, pivot_root, exec)",
        3,
        (("sandman/kernel/spawn.py", "_fork_first"),),
    ),
    (
        "the record (procs reads, write_record)",
        2,
        (("sandman/apply/sandboxes.py", "_record"), ("sandman/observe/records.py", "write_record")),
    ),
)


def load_profile(path: str) -> dict[Label, tuple[float, float]]:
    """(self, cumulative) seconds per function of a cProfile dump (pstats' own format)."""
    with open(path, "rb") as handle:
        raw: dict[Any, Any] = marshal.load(handle)
    return {(str(k[0]), int(k[1]), str(k[2])): (float(v[2]), float(v[3])) for k, v in raw.items()}


def _cumulative(
    profile: dict[Label, tuple[float, float]], matches: Sequence[tuple[str, str]]
) -> float | None:
    found = [
        value[1]
        for (filename, _, function), value in profile.items()
        for suffix, name in matches
        if function == name and filename.endswith(suffix)
    ]
    return sum(found) if found else None


def _short(label: Label) -> str:
    filename, line, function = label
    for marker in ("/site-packages/", "/lib/python3"):
        if marker in filename:
            filename = filename.split(marker, 1)[1]
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + "/"
    filename = filename.removeprefix(repo)
    return f"{filename}:{line}({function})" if line else function


def profile_report(
    one: dict[Label, tuple[float, float]],
    many: dict[Label, tuple[float, float]],
    whole: Stats | None,
    floor: Stats | None,
) -> str:
    total = sum(own for own, _ in one.values())  # every profiled moment, once
    total_many = sum(own for own, _ in many.values())
    lines = [
        "where `sandman apply` spends its time: cProfile in-process (bench/profile_cli.py), one "
        f"run of 1 sandbox and one of {MANY}; the profiler slows Python code (imports most), so "
        "read the shares",
    ]
    if whole is not None:
        lines.append(
            f"  whole process of 1 sandbox, timed above: {ms(whole.median)} ms"
            + (f" (the bare interpreter, `{PASS}`: {ms(floor.median)} ms)" if floor else "")
        )
    rows = [
        [
            "everything profiled (import sandman.cli, main)",
            ms(total * 1000),
            "100%",
            ms(total_many * 1000),
            ms(total_many * 1000 / MANY),
        ]
    ]
    for label, depth, matches in PHASES:
        value = _cumulative(one, matches)
        value_many = _cumulative(many, matches)
        if value is None and value_many is None:
            continue
        rows.append(
            [
                "  " * (depth + 1) + label,
                "-" if value is None else ms(value * 1000),
                "-" if value is None or not total else f"{100 * value / total:.0f}%",
                "-" if value_many is None else ms(value_many * 1000),
                "-" if value_many is None else ms(value_many * 1000 / MANY),
            ]
        )
    headers = [
        "phase (cumulative; imports inside a phase count there too)",
        "1: ms",
        "share",
        f"{MANY}: ms",
        "per sandbox",
    ]
    lines.append(_indent(table(headers, rows, right=(1, 2, 3, 4))))
    for title, profile, divisor in (
        ("1 sandbox, ms", one, 1),
        (f"{MANY} sandboxes, ms per sandbox", many, MANY),
    ):
        lines.append("")
        lines.append(f"  top 10 functions by own time, {title} (waits in syscalls count here):")
        ranked = sorted(profile.items(), key=lambda item: -item[1][0])[:10]
        rows = [
            [ms(own * 1000 / divisor), ms(cum * 1000 / divisor), _short(label)]
            for label, (own, cum) in ranked
        ]
        lines.append(_indent(table(["self", "cum", "function"], rows, right=(0, 1))))
    return "\n".join(lines)


def strace_apply(session: Session, names: Sequence[str]) -> str:
    """`strace -f -T -y` of one apply of `names`: the syscalls of the forked children that
    cProfile only sees as a wait, summed by kind (strace_summary.py)."""
    count = len(names)
    title = f"syscalls of one `sandman apply` of {count} sandboxes, children included"
    if shutil.which("strace") is None:
        return f"{title}: skipped, strace is not installed (`apt-get install strace`)"
    units = os.path.join(session.workdir, f"units-{count}")
    state = os.path.join(session.workdir, f"state-{count}")
    out = os.path.join(session.workdir, f"strace-{count}.txt")
    skip = "!rt_sigaction,rt_sigprocmask,mmap,munmap,mprotect,brk"
    argv = ("strace", "-f", "-T", "-y", "-qq", "-o", out, "-e", f"trace={skip}")
    apply = session.sandman("apply", units, *session.paths(state))
    tracer = subprocess.Popen(
        (*argv, *apply),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=session.runner.env,
        cwd=session.workdir,
    )
    try:
        # strace goes on as long as it traces the inits: wait for the apply itself to exit.
        deadline = time.monotonic() + 120
        while tracer.poll() is None and _traced_apply_running(tracer.pid):
            if time.monotonic() > deadline:
                raise StepError(f"`{' '.join(apply)}` under strace did not finish in 120 s")
            time.sleep(0.05)
    finally:
        session.runner.run(session.sandman("destroy", units, *session.paths(state)), fresh=True)
        try:
            tracer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()
    summary = summarise(out, session.workdir, names)
    rows = [
        [
            ms(row.seconds * 1000),
            ms(row.seconds * 1000 / count),
            str(row.calls),
            str(row.slow),
            ms(row.slowest * 1000),
            row.key,
        ]
        for row in summary.rows[:12]
    ]
    lines = [
        f"{title} (strace -f -T -y; strace slows every call, so read the slow ones): "
        f"{summary.calls} calls, {ms(summary.total * 1000)} ms in syscalls "
        f"({ms(summary.total * 1000 / count)} ms per sandbox), blocking waits left out",
        _indent(
            table(
                ["ms", "per sandbox", "calls", "> 5 ms", "slowest", "syscall and target"],
                rows,
                right=(0, 1, 2, 3, 4),
            )
        ),
    ]
    return "\n".join(lines)


def _traced_apply_running(tracer: int) -> bool:
    """Whether strace's direct child (the apply; the inits are not its children) still runs."""
    try:
        with open(f"/proc/{tracer}/task/{tracer}/children", encoding="ascii") as handle:
            children = handle.read().split()
    except OSError:
        return False
    for child in children:
        proc = read_proc(int(child))
        if proc is not None and not proc.zombie and "apply" in proc.argv:
            return True
    return False


def importtime_report(summary: ImportSummary) -> str:
    lines = [
        f"imports of `sandman apply DIR` (python -X importtime, median of {IMPORTTIME_RUNS} "
        f"runs): {len(summary.order)} modules, {ms(summary.total())} ms of self time in all",
        "  self time by top-level package:",
    ]
    rows = [[p, ms(total), str(n)] for p, total, n in summary.by_package()[:8]]
    lines.append(_indent(table(["package", "self ms", "modules"], rows, right=(1, 2))))
    lines.append("  top 8 by cumulative time:")
    rows = [[ms(summary.cumulative[m]), ms(summary.self_time[m]), m] for m in summary.top(8)]
    lines.append(_indent(table(["cum ms", "self ms", "module"], rows, right=(0, 1))))
    return "\n".join(lines)


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.split("\n"))


# --- the session ----------------------------------------------------------------------------


@dataclass
class Session:
    python: str
    workdir: str
    runner: Runner
    cleanup: Cleanup
    images: str = ""
    notes: list[str] = field(default_factory=list)

    def sandman(self, *args: str) -> tuple[str, ...]:
        return (self.python, "-m", "sandman", *args)

    def paths(self, state: str) -> tuple[str, ...]:
        logs = os.path.join(self.workdir, "logs")
        return ("--state-dir", state, "--image-dir", self.images, "--log-dir", logs)


def write_units(directory: str, names: Sequence[str]) -> None:
    os.makedirs(directory)
    for name in names:
        with open(os.path.join(directory, f"{name}.sandbox.toml"), "w", encoding="utf-8") as f:
            f.write(f"[sandbox]\ncommand = {json.dumps(list(COMMAND))}\n")


def sandman_trial(session: Session, label: str, names: Sequence[str], rounds: int) -> Trial:
    units = os.path.join(session.workdir, f"units-{len(names)}")
    state = os.path.join(session.workdir, f"state-{len(names)}")
    write_units(units, names)
    apply = session.sandman("apply", units, *session.paths(state))
    destroy = session.sandman("destroy", units, *session.paths(state))

    def leftovers() -> None:
        records = os.path.join(state, "sandboxes")
        if os.path.isdir(records) and any(n.endswith(".json") for n in os.listdir(records)):
            session.runner.run(destroy, fresh=True)

    def inits() -> list[int]:
        """The init PIDs sandman recorded (STATE/sandboxes/NAME.json, runtime.pid)."""
        pids = []
        for name in names:
            with open(os.path.join(state, "sandboxes", f"{name}.json"), encoding="utf-8") as f:
                pids.append(int(json.load(f)["runtime"]["pid"]))
        return pids

    session.cleanup.add(f"sandman destroy {units}", leftovers)
    return Trial(
        label,
        len(names),
        rounds,
        start=lambda: session.runner.run(apply),
        stop=lambda: session.runner.run(destroy, fresh=True),
        required=True,
        inits=inits,
    )


def build_image(session: Session) -> str:
    session.images = os.path.join(session.workdir, "images")
    return busybox_image(session.python, session.workdir, session.images)


def run_session(name: str, prefix: str, python: str, body: Callable[[Session], None]) -> None:
    """`body` with a Session in a new temporary directory (common.in_workdir): every clean-up
    step it adds runs at the end, on an error and on Ctrl-C or SIGTERM too."""

    def start(workdir: str, cleanup: Cleanup) -> None:
        runner = Runner(workdir)
        cleanup.add("stderr file", runner.close)
        body(Session(python, workdir, runner, cleanup))

    in_workdir(name, prefix, start)


def crun_trials(session: Session, rootfs: str, args: argparse.Namespace) -> tuple[list[Trial], str]:
    runner = session.runner
    mounts = None
    layout = cgroup_layout()
    try:
        if layout == "hybrid":
            mounts = PrivateMounts.make()
            session.cleanup.add("the private mount namespace", mounts.close)
        crun = Crun(runner, os.path.join(session.workdir, "crun"), "", mounts)
        crun.bundle = make_bundle(runner, session.workdir, rootfs)
    except (StepError, OSError, subprocess.CalledProcessError) as exc:
        return [], f"cannot prepare crun: {exc}"

    def delete_all() -> None:
        if os.path.isdir(crun.root):
            with crun.context():
                crun.delete_all()

    session.cleanup.add("crun delete -f", delete_all)
    tag = f"smbench{os.getpid()}"
    one, many = (f"{tag}-1",), tuple(f"{tag}-{n:02d}" for n in range(1, MANY + 1))
    where = (
        f"in a private mount namespace with {UNIFIED} unmounted (this host's cgroups are a "
        "v1/v2 hybrid, which crun refuses), entered by the benchmark with setns around crun's "
        "runs; crun's cgroupfs manager makes its v1 cgroups as usual"
        if mounts is not None
        else f"in the host's mount namespace ({layout} cgroups)"
    )
    note = (
        f"crun: `crun --root TMP run -d --bundle B ID`, {where}; bundle from `crun spec` with "
        f"args {' '.join(COMMAND)}, terminal false, root the busybox image, readonly false; "
        f"namespaces {crun_namespaces(crun.bundle)} (no user namespace)"
    )
    trials = [
        Trial(
            CRUN_1,
            1,
            args.runs,
            lambda: crun.start(one),
            crun.delete_all,
            context=crun.context,
            inits=lambda: crun.init_pids(one),
        ),
        Trial(
            CRUN_N,
            MANY,
            args.runs_many,
            lambda: crun.start(many),
            crun.delete_all,
            context=crun.context,
            inits=lambda: crun.init_pids(many),
        ),
    ]
    return trials, note


def runc_trial(session: Session, args: argparse.Namespace) -> tuple[Trial, str]:
    """`runc run -d` of crun's bundle (the same config.json), in the host's mount namespace:
    runc, unlike crun, accepts the v1/v2 hybrid."""
    root = os.path.join(session.workdir, "runc")
    bundle = os.path.join(session.workdir, "bundle")
    ident = f"smbenchr{os.getpid()}"
    runner = session.runner

    def listed() -> list[str]:
        if not os.path.isdir(root):
            return []
        return runner.output(("runc", "--root", root, "list", "-q")).split()

    def delete_all() -> None:
        for name in listed():
            runner.run(("runc", "--root", root, "delete", "-f", name), fresh=True)

    def inits() -> list[int]:
        state = json.loads(runner.output(("runc", "--root", root, "state", ident)))
        return [int(state["pid"])]

    session.cleanup.add("runc delete -f", delete_all)
    trial = Trial(
        RUNC_1,
        1,
        args.runs,
        lambda: runner.run(("runc", "--root", root, "run", "-d", "--bundle", bundle, ident)),
        delete_all,
        inits=inits,
    )
    note = (
        "runc: `runc --root TMP run -d --bundle B ID` with crun's bundle, in the host's mount "
        "namespace (runc accepts the hybrid layout); `runc delete -f` after, untimed"
    )
    return trial, note


LXC_CONFIG = """lxc.rootfs.path = dir:{rootfs}
lxc.uts.name = smlxc
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
lxc.mount.auto = proc:rw
"""


def lxc_trial(session: Session, rootfs: str, args: argparse.Namespace) -> tuple[Trial, str]:
    """`lxc-execute` of /bin/true in a privileged container (its default namespaces, an empty
    network namespace), timed to its exit: lxc-execute stays the container's parent."""
    path = os.path.join(session.workdir, "lxc")
    os.makedirs(path, exist_ok=True)
    config = os.path.join(session.workdir, "lxc.conf")
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(LXC_CONFIG.format(rootfs=rootfs))
    name = f"smbenchl{os.getpid()}"
    argv = ("lxc-execute", "-n", name, "-P", path, "-f", config, "--", "/bin/true")
    trial = Trial(LXC, 1, args.runs, lambda: session.runner.run(argv), detached=False)
    note = (
        "lxc-execute: `lxc-execute -n NAME -P TMP -f CONF -- /bin/true` (rootfs dir:ROOTFS, "
        "net type empty, proc mounted, no apparmor), timed to its exit"
    )
    return trial, note


def emit_rows(trials: dict[str, Trial | None], unavailable: dict[str, str]) -> None:
    """The summary rows of this benchmark (see common.emit)."""

    def peer(label: str, short: str) -> Peer:
        trial = trials.get(label)
        if trial is not None and trial.stats is not None:
            return Peer(short, trial.stats.median)
        if trial is not None and trial.error:
            return Peer(short, why=f"n/a: failed: {trial.error.splitlines()[-1][:80]}")
        tool = short.rsplit(maxsplit=1)[-1] if short[0].isdigit() else short.split(maxsplit=1)[0]
        return Peer(short, why=f"n/a: {unavailable.get(tool, 'not run')[:80]}")

    s1, sn = trials[SANDMAN_1], trials[SANDMAN_N]
    assert s1 is not None and sn is not None
    emit(
        "apply_1",
        "whole `apply` of 1 sandbox, no network, until init runs",
        sandman=s1.stats,
        peers=[
            peer(NSPAWN, "systemd-nspawn"),
            peer(RUNC_1, "runc"),
            peer(LXC, "lxc-execute"),
            peer(CRUN_1, "crun"),
            peer(BWRAP, "bwrap"),
        ],
        base="systemd-nspawn",
        limit=NSPAWN_LIMIT,
        target=f"<= {NSPAWN_LIMIT:g}x nspawn",
        note="nspawn, lxc-execute, bwrap timed to /bin/true's exit; crun, runc detached",
    )
    crun_n = peer(CRUN_N, f"{MANY} x crun")
    each = ""
    if s1.stats is not None and sn.stats is not None:
        each = f"{ms((sn.stats.median - s1.stats.median) / (MANY - 1))} ms per extra sandbox"
    emit(
        "apply_50",
        f"`apply` of {MANY} sandboxes, no network",
        sandman=sn.stats,
        peers=[crun_n],
        base=crun_n.label,
        limit=CRUN_LIMIT,
        target=f"<= {CRUN_LIMIT:g}x {MANY} crun runs",
        note=each,
    )
    worst = max((c.bytes_per_sandbox for c in (*s1.censuses, *sn.censuses)), default=None)
    memory_peers = []
    for label, short in ((CRUN_N, "crun detached"), (RUNC_1, "runc detached")):
        trial = trials.get(label)
        if trial is not None and trial.censuses:
            memory_peers.append(
                Peer(short, float(max(c.bytes_per_sandbox for c in trial.censuses)))
            )
    emit(
        "memory",
        "host memory left per running sandbox (every host process that exists only for it)",
        value=None if worst is None else float(worst),
        unit="B",
        peers=memory_peers,
        target="0 bytes",
        verdict=None if worst is None else ("met" if worst == 0 else "MISSED"),
        limit=0.0,
        note="nspawn and lxc-execute cannot detach: their monitor stays for the sandbox's life",
    )


def run(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        raise BenchError("sandman apply and the peers need root: run it as root")
    python = real_python(args.python)
    run_session("bench/spawn.py", "sandman-bench-spawn-", python, lambda s: measure(s, args))


def measure(session: Session, args: argparse.Namespace) -> None:
    require_modules(session.python, ("sandman.cli",), cwd=session.workdir)
    unavailable, install_notes = install_peers(not args.no_install)
    rootfs = build_image(session)
    floor = Trial(
        PASS,
        0,
        args.runs,
        lambda: session.runner.run((session.python, "-c", "pass")),
        detached=False,
        required=True,
    )
    trials: dict[str, Trial | None] = {
        SANDMAN_1: sandman_trial(session, SANDMAN_1, ["one"], args.runs),
        VALIDATE: Trial(
            VALIDATE,
            0,
            args.runs,
            lambda: session.runner.run(
                session.sandman("validate", os.path.join(session.workdir, "units-1"))
            ),
            detached=False,
            required=True,
        ),
        SANDMAN_N: sandman_trial(session, SANDMAN_N, MANY_NAMES, args.runs_many),
        CRUN_1: None,
        RUNC_1: None,
        LXC: None,
        CRUN_N: None,
        BWRAP: None,
        NSPAWN: None,
    }
    notes = list(install_notes)
    if "crun" not in unavailable:
        crun, note = crun_trials(session, rootfs, args)
        notes.append(note)
        for trial in crun:
            trials[trial.label] = trial
    if "bwrap" not in unavailable:
        bwrap = bwrap_true(rootfs, *BWRAP_FLAGS)
        trials[BWRAP] = Trial(
            BWRAP, 1, args.runs, lambda: session.runner.run(bwrap), detached=False
        )
        notes.append(
            f"bwrap: `{' '.join(bwrap).replace(rootfs, 'ROOTFS')}`, timed to its exit "
            "(bwrap cannot detach: the figure includes the sandbox's teardown)"
        )
    if "systemd-nspawn" not in unavailable:
        nspawn = ("systemd-nspawn", "-D", rootfs, *NSPAWN_FLAGS, "/bin/true")
        trials[NSPAWN] = Trial(
            NSPAWN, 1, args.runs, lambda: session.runner.run(nspawn), detached=False
        )
        notes.append(
            f"systemd-nspawn: `{' '.join(nspawn).replace(rootfs, 'ROOTFS')}`, timed to "
            "its exit (it cannot detach either); --register=no --keep-unit because "
            "systemd is not PID 1 here, --pipe for no pty, the last three so that it "
            "writes nothing into the shared rootfs"
        )
    if "runc" not in unavailable:
        trials[RUNC_1], note = runc_trial(session, args)
        notes.append(note)
    if "lxc-execute" not in unavailable:
        trials[LXC], note = lxc_trial(session, rootfs, args)
        notes.append(note)
    for tool, why in unavailable.items():
        notes.append(f"{tool}: left out: {why}")
    print_header(session, rootfs, notes, args)
    order = [floor, *(t for t in trials.values() if t is not None)]
    order.sort(key=lambda t: t.count > 1)  # the 1-sandbox runs first in each round
    run_rounds(order, session.runner, args.warmups)
    print(report_table(trials))
    print()
    print(targets_report(trials))
    print()
    print(details_report(trials, floor))
    emit_rows(trials, unavailable)
    print()
    one = trials[SANDMAN_1]
    assert one is not None
    print(profile_apply(session, one, floor))


def print_header(
    session: Session, rootfs: str, notes: Sequence[str], args: argparse.Namespace
) -> None:
    print(
        "sandman spawn benchmark: from the command to the init running, and host memory per "
        "running sandbox"
    )
    print(f"  interpreter: {describe_host(session.python)}")
    print(f"  sandman {module_version(session.python, 'sandman', session.workdir)}")
    print(f"  rootfs (every tool): ROOTFS = {rootfs}, built by `sandman image busybox`")
    print(
        f"  sandboxes: `{' '.join(COMMAND)}`, default namespaces, no [network]; sandman: "
        "overlay rootfs, user namespace with an auto id range"
    )
    versions = [
        tool_version((tool, "--version"))
        for tool in ("crun", "bwrap", "systemd-nspawn")
        if shutil.which(tool)
    ]
    if versions:
        print(f"  peers: {'; '.join(versions)}")
    for note in notes:
        print(f"  {note}")
    print(
        f"  {args.runs} interleaved rounds of the 1-sandbox runs, {args.runs_many} of the "
        f"{MANY}-sandbox runs, after {args.warmups} warm-up round(s); wall time of whole "
        "processes (perf_counter around subprocess.run); `sandman destroy DIR` or `crun delete "
        "-f` after each run, untimed"
    )
    print()


def profile_apply(session: Session, one: Trial, floor: Trial) -> str:
    """cProfile of an apply of 1 and of 50, then -X importtime of a few of 1; each apply is
    destroyed after it."""
    driver = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profile_cli.py")
    profiles = []
    for count in (1, MANY):
        units = os.path.join(session.workdir, f"units-{count}")
        state = os.path.join(session.workdir, f"state-{count}")
        destroy = session.sandman("destroy", units, *session.paths(state))
        out = os.path.join(session.workdir, f"apply-{count}.prof")
        try:
            argv = (session.python, driver, out, "apply", units, *session.paths(state))
            session.runner.run(argv, fresh=True)
        finally:
            session.runner.run(destroy, fresh=True)
        profiles.append(load_profile(out))
    lines = [profile_report(profiles[0], profiles[1], one.stats, floor.stats), ""]
    units = os.path.join(session.workdir, "units-1")
    state = os.path.join(session.workdir, "state-1")
    apply_args = ("-m", "sandman", "apply", units, *session.paths(state))
    destroy = session.sandman("destroy", units, *session.paths(state))
    runs = []
    for _ in range(IMPORTTIME_RUNS):
        try:
            runs.append(importtime(session.python, apply_args, session.workdir))
        finally:
            session.runner.run(destroy, fresh=True)
    lines.append(importtime_report(ImportSummary.of(runs)))
    lines.append("")
    lines.append(strace_apply(session, MANY_NAMES))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = round_options(
        "Time sandman apply to the init running, beside crun, bwrap, systemd-nspawn.",
        MANY,
        "missing peers",
    )
    args = parse_rounds(parser, argv)
    return run_main("bench/spawn.py", lambda: run(args), (ValueError, StepError))


if __name__ == "__main__":
    raise SystemExit(main())
