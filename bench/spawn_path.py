"""The spawn path alone, in process: sandman's `spawn` beside a C floor, unshare(1) and bwrap.

`python bench/spawn_path.py [--runs 5] [--per-round 20] [--warmups 1] [--python PATH]`

As root. Every contender starts `/bin/true` in a new sandbox on the same busybox rootfs (built
with `sandman image busybox`), `--per-round` times in a row in one process, and reports the time
of each start, from before the first fork to the end of the wait for `/bin/true`'s exit:

- the C floor (`floor.c`, built with gcc, or the binary in $SANDMAN_BENCH_FLOOR): clone3 with
  the namespaces of sandman's default sandbox (user, mount, pid, uts, ipc, net, cgroup), uid and
  gid maps, the rootfs bound, /proc mounted, pivot_root, exec;
- sandman: `sandman.kernel.spawn.spawn(spec)` (start then finish, as `apply/sandboxes.py` does) in
  a Python process that is a child subreaper, so that it can wait for the init (which sandman's
  first child leaves to the nearest subreaper) to exit; the spec is the one apply makes for a
  default sandbox (overlay over an idmapped view of the image, auto id range, seccomp default
  filter, default capabilities, no_new_privileges), without cgroup and network; a second variant
  binds the image (no overlay) and skips seccomp and capabilities, the floor's work plus sandman's
  /proc, /sys and /dev;
- `unshare --user --map-root-user --mount --pid --fork --uts --ipc --net --cgroup --mount-proc
  --root ROOTFS /bin/true` and `bwrap --unshare-all --bind ROOTFS / --proc /proc --dev /dev
  /bin/true`, started and waited for by the floor program's fork/exec loop (`floor exec`).

Rounds interleave the contenders. It reports and never fails on a time; the temporary directory
is removed at the end, on an error and on Ctrl-C too.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
from collections.abc import Sequence

from common import (
    BenchError,
    Peer,
    Stats,
    busybox_image,
    bwrap_true,
    clean_env,
    describe_host,
    emit,
    in_workdir,
    ms,
    real_python,
    run_main,
    table,
)

FLOOR_ENV = "SANDMAN_BENCH_FLOOR"
LIMIT = 1.5
ID_BASE = 1_000_000_000  # the floor's map; sandman's worker uses the range after it
FLOOR = "C floor (clone3, maps, bind, /proc, pivot_root, exec)"
SANDMAN = "sandman spawn(), apply's default spec"
SANDMAN_BIND = "sandman spawn(), bind rootfs, no seccomp/caps"
UNSHARE = "unshare(1) --root --mount-proc"
BWRAP = "bwrap --unshare-all"

# The worker: runs in a separate interpreter so that the benchmark's own state (threads, fds)
# is not forked with every spawn; it prints one time in ms per line.
WORKER = r"""
import ctypes, os, sys, time
from sandman.capabilities import PRESETS
from sandman.kernel import security
from sandman.kernel import syscalls as sc
from sandman.kernel.rootfs import RootfsPlan
from sandman.kernel.spawn import IdMapping, SpawnSpec, spawn

rootfs, workdir, count, variant, base = sys.argv[1:6]
count, base = int(count), int(base)
libc = ctypes.CDLL(None, use_errno=True)
PR_SET_CHILD_SUBREAPER = 36
if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
runtime = os.path.join(workdir, variant)
for sub in ("root", "lower", "upper", "work"):
    os.makedirs(os.path.join(runtime, sub), exist_ok=True)
os.chown(os.path.join(runtime, "upper"), base, base)
idmap = IdMapping(uid=((0, base, 65536),), gid=((0, base, 65536),))
default = variant == "default"
plan = RootfsPlan(
    stage=os.path.join(runtime, "root"),
    mode="overlay" if default else "bind",
    source=rootfs,
    upper=os.path.join(runtime, "upper"),
    work=os.path.join(runtime, "work"),
    lower=os.path.join(runtime, "lower"),
    owner=(base, base),
)
flags = (sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWNET
         | sc.CLONE_NEWCGROUP)
before, after = security.steps("default", PRESETS["default"], True) if default else ((), ())
spec = SpawnSpec(
    name="sbp", command=("/bin/true",), environment={}, namespaces=flags, rootfs=plan,
    log_path=os.path.join(runtime, "log"), hostname="sbp", idmap=idmap,
    setup_inside=before, finish_inside=after,
)
out = []
for _ in range(count):
    start = time.perf_counter()
    pid = spawn(spec)
    _, status = os.waitpid(pid, 0)
    elapsed = (time.perf_counter() - start) * 1000.0
    if status != 0:
        sys.exit(f"/bin/true in the sandbox ended with status {status}")
    out.append(f"{elapsed:.4f}")
print("\n".join(out))
"""


def build_floor(workdir: str) -> str:
    """The floor binary: $SANDMAN_BENCH_FLOOR (bench/run builds it) or gcc now."""
    given = os.environ.get(FLOOR_ENV)
    if given:
        if not os.access(given, os.X_OK):
            raise BenchError(f"${FLOOR_ENV} = {given} is not an executable")
        return given
    if shutil.which("gcc") is None:
        raise BenchError("no gcc to build the C floor (apt-get install gcc libc6-dev)")
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.c")
    binary = os.path.join(workdir, "floor")
    result = subprocess.run(
        ["gcc", "-O2", "-o", binary, source], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise BenchError(f"gcc {source} failed:\n{result.stderr.strip()}")
    return binary


def times_of(argv: Sequence[str], cwd: str) -> list[float]:
    result = subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        env=clean_env(),
        cwd=cwd,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join(result.stderr.strip().splitlines()[-8:])
        raise BenchError(f"`{' '.join(argv)}` exited with {result.returncode}:\n{tail}")
    return [float(line) for line in result.stdout.split()]


def contenders(
    python: str, floor: str, rootfs: str, workdir: str, count: int
) -> dict[str, tuple[str, ...]]:
    worker = os.path.join(workdir, "worker.py")
    with open(worker, "w", encoding="utf-8") as handle:
        handle.write(WORKER)
    base = str(ID_BASE + 65536)
    n = str(count)
    found: dict[str, tuple[str, ...]] = {
        FLOOR: (floor, "spawn", rootfs, n),
        SANDMAN: (python, worker, rootfs, workdir, n, "default", base),
        SANDMAN_BIND: (python, worker, rootfs, workdir, n, "bind", base),
    }
    if shutil.which("unshare"):
        found[UNSHARE] = (
            floor,
            "exec",
            n,
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
            "--pid",
            "--fork",
            "--uts",
            "--ipc",
            "--net",
            "--cgroup",
            "--mount-proc",
            "--root",
            rootfs,
            "/bin/true",
        )
    if shutil.which("bwrap"):
        found[BWRAP] = (floor, "exec", n, *bwrap_true(rootfs, "--unshare-all"))
    return found


def measure(args: argparse.Namespace, workdir: str) -> None:
    python = real_python(args.python)
    floor = build_floor(workdir)
    rootfs = busybox_image(python, workdir, os.path.join(workdir, "images"))
    commands = contenders(python, floor, rootfs, workdir, args.per_round)
    failed: dict[str, str] = {}
    samples: dict[str, list[float]] = {label: [] for label in commands}
    for index in range(args.warmups + args.runs):
        for label, argv in commands.items():
            if label in failed:
                continue
            try:
                got = times_of(argv, workdir)
            except BenchError as exc:
                if label in (FLOOR, SANDMAN):
                    raise
                failed[label] = str(exc).splitlines()[-1]
                continue
            if index >= args.warmups:
                samples[label].extend(got)
    stats = {label: Stats(tuple(v)) for label, v in samples.items() if v and label not in failed}
    print("sandman spawn path, in process, beside a C floor, unshare(1) and bwrap")
    print(f"  interpreter: {describe_host(python)}")
    print(f"  rootfs (every contender): {rootfs}, built by `sandman image busybox`")
    print(
        f"  {args.runs} interleaved rounds of {args.per_round} starts each, after {args.warmups} "
        "warm-up round(s); time per start, from before the first fork to the end of the wait "
        "for /bin/true's exit"
    )
    print()
    base = stats[FLOOR].median
    rows = []
    for label in commands:
        if label in failed:
            rows.append([label, "-", "-", "-", f"failed: {failed[label]}"])
            continue
        s = stats[label]
        rows.append(
            [
                label,
                f"{s.median:.2f}",
                f"{s.low:.2f}-{s.high:.2f}",
                f"{s.median / base:.2f}x",
                f"mean {statistics.fmean(s.samples):.2f}",
            ]
        )
    print(table(["contender", "median ms", "min-max ms", "vs C floor", ""], rows, right=(1, 2, 3)))
    print()
    mine = stats[SANDMAN]
    achieved = mine.median / base
    verdict = "met" if achieved <= LIMIT else "MISSED"
    print(
        f"target (issue #10): the spawn path within {LIMIT}x the C floor: "
        f"{ms(mine.median)} / {base:.2f} ms = {achieved:.2f}x: {verdict}"
    )
    peers = [Peer("C floor", base)]
    for label, short in ((UNSHARE, "unshare"), (BWRAP, "bwrap")):
        if label in stats:
            peers.append(Peer(short, stats[label].median))
        else:
            peers.append(Peer(short, why=f"n/a: {failed.get(label, 'not installed')}"))
    emit(
        "spawn_path",
        "spawn path alone, in process: fork, namespaces, pivot_root, exec of /bin/true",
        sandman=mine,
        peers=peers,
        base="C floor",
        limit=LIMIT,
        target=f"<= {LIMIT}x the C floor",
        note="sandman's spawn() with apply's default spec (overlay, idmap, seccomp, caps)",
    )
    emit(
        "spawn_path_bind",
        "spawn path, bind rootfs, no seccomp or capabilities (info)",
        sandman=stats[SANDMAN_BIND],
        peers=[Peer("C floor", base)],
        base="C floor",
    )
    if verdict == "MISSED":
        print()
        print(profile_spawn(python, workdir, rootfs))


# Wrapped in the worker when phases are asked for: (module, function) timed in whichever
# process runs it (the parent, the user-namespace holder, the first child, the init), written
# with os.write to an O_APPEND file, since the children leave with os._exit.
PHASES = (
    ("sandman.kernel.spawn", "make_user_namespace"),
    ("sandman.kernel.spawn", "_write_id_maps"),
    ("sandman.kernel.spawn", "_fork_first"),
    ("sandman.kernel.spawn", "_parent"),
    ("sandman.kernel.spawn", "_reap"),
    ("sandman.kernel.spawn", "_first_child"),
    ("sandman.kernel.spawn", "_enter_namespaces"),
    ("sandman.kernel.spawn", "_become_namespace_root"),
    ("sandman.kernel.spawn", "_init_child"),
    ("sandman.kernel.spawn", "loopback_up"),
    ("sandman.kernel.spawn", "_become_user"),
    ("sandman.kernel.spawn", "_set_stdio"),
    ("sandman.kernel.spawn", "_report"),
    ("sandman.kernel.rootfs", "mount_host_side"),
    ("sandman.kernel.rootfs", "_mount_root"),
    ("sandman.kernel.rootfs", "open_stage"),
    ("sandman.kernel.rootfs", "mount_inside"),
    ("sandman.kernel.rootfs", "_mount_proc"),
    ("sandman.kernel.rootfs", "_mount_sys"),
    ("sandman.kernel.rootfs", "_mount_dev"),
    ("sandman.kernel.rootfs", "enter_root"),
)
PHASE_WRAPPER = r"""
import importlib, os, time
_fd = os.open(os.environ["SPAWN_PHASES"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

def _wrap(module, name):
    target = importlib.import_module(module)
    inner = getattr(target, name)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            spent = (time.perf_counter() - start) * 1000.0
            os.write(_fd, f"{os.getpid()} {module}.{name} {spent:.4f}\n".encode())

    setattr(target, name, timed)

def _wrap_steps(steps, label):
    def one(step, index):
        def timed():
            start = time.perf_counter()
            try:
                step()
            finally:
                spent = (time.perf_counter() - start) * 1000.0
                os.write(_fd, f"{os.getpid()} {label}[{index}] {spent:.4f}\n".encode())
        return timed
    return tuple(one(step, i) for i, step in enumerate(steps))

for _module, _name in PHASES:
    _wrap(_module, _name)
before = _wrap_steps(before, "security: before user")
after = _wrap_steps(after, "security: after user")
"""


def profile_spawn(python: str, workdir: str, rootfs: str, count: int = 20) -> str:
    """The spawn path's steps, timed in every process that runs them (a wrapper around each
    function; cProfile sees nothing of the children, which leave with os._exit)."""
    source = os.path.join(workdir, "worker.py")
    with open(source, encoding="utf-8") as handle:
        text = handle.read()
    wrapper = f"PHASES = {PHASES!r}\n{PHASE_WRAPPER}"
    marker = "spec = SpawnSpec("
    phased = os.path.join(workdir, "phased.py")
    with open(phased, "w", encoding="utf-8") as handle:
        handle.write(text.replace(marker, wrapper + marker, 1))
    out = os.path.join(workdir, "phases.txt")
    base = str(ID_BASE + 65536)
    env = {**clean_env(), "SPAWN_PHASES": out}
    argv = (python, phased, rootfs, workdir, str(count), "default", base)
    result = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=workdir, check=False)
    if result.returncode != 0:
        return f"phases: the instrumented worker failed: {result.stderr.strip()[-400:]}"
    wall = statistics.median(float(x) for x in result.stdout.split())
    sums: dict[str, float] = {}
    calls: dict[str, int] = {}
    with open(out, encoding="utf-8") as handle:
        for line in handle:
            head, spent = line.rsplit(" ", 1)
            name = head.split(" ", 1)[1]
            sums[name] = sums.get(name, 0.0) + float(spent)
            calls[name] = calls.get(name, 0) + 1
    rows = [
        [name, f"{sums[name] / count:.2f}", f"{calls[name] / count:g}"]
        for name in sorted(sums, key=lambda n: -sums[n])
    ]
    lines = [
        f"where a spawn's time goes: {count} spawns with each step wrapped in a timer, in the "
        f"process that runs it (nested steps are counted in their callers too); median start "
        f"{wall:.2f} ms with the timers",
        "\n".join(
            "  " + line
            for line in table(["step", "ms per spawn", "calls"], rows, (1, 2)).split("\n")
        ),
    ]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> None:
    if os.geteuid() != 0:
        print("bench/spawn_path.py: needs root (namespaces, mounts); skipped")
        emit("spawn_path", "spawn path alone", verdict="not measured: not root")
        return
    in_workdir(
        "bench/spawn_path.py", "sandman-bench-spawnpath-", lambda workdir, _: measure(args, workdir)
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Time sandman's spawn path in process against a C floor, unshare and bwrap."
    )
    parser.add_argument("--runs", type=int, default=5, help="timed rounds (default 5)")
    parser.add_argument(
        "--per-round", type=int, default=20, help="starts per contender per round (default 20)"
    )
    parser.add_argument("--warmups", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument(
        "--python", metavar="PATH", help="the interpreter of sandman's worker (default: this one)"
    )
    args = parser.parse_args(argv)
    if args.runs < 1 or args.per_round < 1 or args.warmups < 0:
        parser.error("--runs and --per-round must be at least 1, --warmups at least 0")
    return run_main("bench/spawn_path.py", lambda: run(args), (OSError,))


if __name__ == "__main__":
    sys.exit(main())
