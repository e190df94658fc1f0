"""The spawn path alone, in process: sandman's `spawn` beside a C floor, unshare(1) and bwrap.

Every contender starts `/bin/true` in a new sandbox on the busybox rootfs `--per-round` times in
a row in one process, and reports each start, from before the first fork to the end of the wait
for `/bin/true`'s exit; rounds interleave the contenders:
- the C floor (`floor.c`, $SANDMAN_BENCH_FLOOR or built now with gcc): clone3 with the namespaces
  of sandman's default sandbox, uid and gid maps, the rootfs bound, /proc, pivot_root, exec;
- sandman: `sandman.kernel.spawn.spawn(spec)` in a Python process that is a child subreaper (so
  that it can wait for the init, which sandman's first child leaves behind), with apply's spec
  of a default sandbox (overlay over an idmapped image, seccomp, capabilities; no cgroup, no
  network), and, for information, the image bound without seccomp and capabilities;
- the Python floor: the C floor's own steps, no more, from a Python process through
  sandman.kernel.syscalls (clone3 of the interpreter into the same namespaces, the maps, the
  bind, /proc, pivot_root, execve): what an interpreter adds to those steps, and so how much of
  the gap to the C floor is the interpreter's and how much is what sandman does beyond them;
- `unshare ... --root ROOTFS /bin/true` and `bwrap --unshare-all ... /bin/true`, started and
  waited for by the floor program's own loop (`floor exec N ARGV`): no Python start-up timed.
"""

from __future__ import annotations

import os
import shutil

from harness import Session, Trial, emit, main, peer_of
from peers import bwrap_true

LIMIT = 3.0  # issue #21 (the earlier target was 1.5x)
BIND = "sandman, bind rootfs, no seccomp/caps"
PY_FLOOR_LABEL = "Python floor"
ID_BASE = 1_000_000_000  # the floor's map; sandman's worker uses the range after it
UNSHARE = (
    "--user --map-root-user --mount --pid --fork --uts --ipc --net --cgroup --mount-proc --root"
)

# The worker: runs in a separate interpreter so that the benchmark's own state (threads, fds)
# is not forked with every spawn; it prints one time in ms per line.
WORKER = r"""
import ctypes, os, sys, time
from sandman.capabilities import PRESETS
from sandman.kernel import security
from sandman.kernel import syscalls as sc
from sandman.kernel.seccomp import Seccomp
from sandman.kernel.rootfs import RootfsPlan
from sandman.kernel.spawn import IdMapping, SpawnSpec, spawn

rootfs, workdir, count, variant, base = sys.argv[1:6]
base, default, runtime = int(base), variant == "default", os.path.join(workdir, variant)
if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:  # PR_SET_CHILD_SUBREAPER
    raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")
for sub in ("root", "lower", "upper", "work"):
    os.makedirs(os.path.join(runtime, sub), exist_ok=True)
os.chown(os.path.join(runtime, "upper"), base, base)
dirs = {key: os.path.join(runtime, key) for key in ("upper", "work", "lower")}
plan = RootfsPlan(stage=os.path.join(runtime, "root"), mode="overlay" if default else "bind",
                  source=rootfs, owner=(base, base), **dirs)
flags = (sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC | sc.CLONE_NEWNET
         | sc.CLONE_NEWCGROUP)
before, after = security.steps(Seccomp(), PRESETS["default"], True) if default else ((), ())
spec = SpawnSpec(
    name="sbp", command=("/bin/true",), namespaces=flags, rootfs=plan,
    confinement=security.Confinement(setup_inside=before, finish_inside=after),
    log_path=os.path.join(runtime, "log"), hostname="sbp",
    idmap=IdMapping(uid=((0, base, 65536),), gid=((0, base, 65536),)),
)
for _ in range(int(count)):
    start = time.perf_counter()
    _, status = os.waitpid(spawn(spec), 0)
    print(f"{(time.perf_counter() - start) * 1000.0:.4f}")
    if status != 0:
        sys.exit(f"/bin/true in the sandbox ended with status {status}")
"""

# The Python floor: floor.c's spawn_one and child, step for step.
PY_FLOOR = r"""
import os, sys, time
from sandman.kernel import syscalls as sc

rootfs, count, base = sys.argv[1], int(sys.argv[2]), sys.argv[3]
flags = (sc.CLONE_NEWUSER | sc.CLONE_NEWNS | sc.CLONE_NEWPID | sc.CLONE_NEWUTS | sc.CLONE_NEWIPC
         | sc.CLONE_NEWNET | sc.CLONE_NEWCGROUP)
id_map = f"0 {base} 65536\n".encode()


def child(go):
    os.read(go, 1)
    os.close(go)
    sc.mount(None, "/", None, sc.MS_REC | sc.MS_PRIVATE)
    sc.mount(rootfs, rootfs, None, sc.MS_BIND | sc.MS_REC)
    os.chdir(rootfs)
    sc.mount("proc", "proc", "proc", sc.MS_NOSUID | sc.MS_NODEV | sc.MS_NOEXEC)
    sc.pivot_root(".", ".")
    sc.umount2(".", sc.MNT_DETACH)  # the old root, stacked under the new one
    os.chdir("/")
    os.execve("/bin/true", ["/bin/true"], {"PATH": "/bin:/sbin:/usr/bin:/usr/sbin"})


for _ in range(count):
    start = time.perf_counter()
    go, release = os.pipe2(os.O_CLOEXEC)
    pid = sc.fork_into_namespaces(flags)
    if pid == 0:
        try:
            os.close(release)
            child(go)
        finally:
            os._exit(127)
    os.close(go)
    for name in ("uid_map", "gid_map"):
        fd = os.open(f"/proc/{pid}/{name}", os.O_WRONLY)
        os.write(fd, id_map)
        os.close(fd)
    os.write(release, b"1")
    os.close(release)
    _, status = os.waitpid(pid, 0)
    print(f"{(time.perf_counter() - start) * 1000.0:.4f}")
    if status != 0:
        sys.exit(f"/bin/true in the sandbox ended with status {status}")
"""


def build_floor(session: Session) -> str:
    """The floor binary: $SANDMAN_BENCH_FLOOR (bench/run builds it) or gcc now."""
    if given := os.environ.get("SANDMAN_BENCH_FLOOR"):
        return given
    binary = os.path.join(session.workdir, "floor")
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "floor.c")
    session.output(("gcc", "-O2", "-o", binary, source))
    return binary


def contenders(session: Session, floor: str, rootfs: str) -> dict[str, tuple[str, ...]]:
    worker, py_floor = (os.path.join(session.workdir, f) for f in ("worker.py", "py_floor.py"))
    for path, text in ((worker, WORKER), (py_floor, PY_FLOOR)):
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(text)
    n, base = str(session.args.per_round), str(ID_BASE + 65536)
    sandman = (session.python, worker, rootfs, session.workdir, n)
    found = {
        "C floor": (floor, "spawn", rootfs, n),
        PY_FLOOR_LABEL: (session.python, py_floor, rootfs, n, str(ID_BASE)),
        "sandman": (*sandman, "default", base),
        BIND: (*sandman, "bind", base),
    }
    if shutil.which("unshare"):
        found["unshare"] = (floor, "exec", n, "unshare", *UNSHARE.split(), rootfs, "/bin/true")
    if shutil.which("bwrap"):
        found["bwrap"] = (floor, "exec", n, *bwrap_true(rootfs, "--unshare-all"))
    return found


def starts(session: Session, label: str, argv: tuple[str, ...]) -> Trial:
    """A contender that times itself: its own loop prints one start's ms a line."""
    printed: list[float] = []

    def start() -> None:
        printed[:] = [float(x) for x in session.output(argv).split()]

    required = label in ("C floor", PY_FLOOR_LABEL, "sandman")
    return Trial(label, start, required=required, own_times=lambda: printed)


def measure(session: Session) -> None:
    args = session.args
    rootfs = session.image()
    found = contenders(session, build_floor(session), rootfs)
    trials = [starts(session, label, argv) for label, argv in found.items()]
    session.rounds(f"spawn path, in process ({args.per_round} starts a round)", trials)
    by = {t.label: t for t in trials}
    floor = by["C floor"].peer("C floor")
    emit(
        "spawn_path",
        "spawn path alone, in process: fork, namespaces, pivot_root, exec of /bin/true",
        sandman=by["sandman"].stats,
        peers=[
            floor,
            by[PY_FLOOR_LABEL].peer(PY_FLOOR_LABEL),
            peer_of(by, "unshare"),
            peer_of(by, "bwrap"),
        ],
        base="C floor",
        limit=LIMIT,
        target=f"<= {LIMIT}x the C floor",
        note="sandman's spawn() with apply's default spec (overlay, idmap, seccomp, caps)",
    )
    info = (
        ("spawn_path_bind", "spawn path, bind rootfs, no seccomp or capabilities (info)", BIND),
        (
            "spawn_path_python_floor",
            "the C floor's own steps from Python (info: the interpreter's share of the gap)",
            PY_FLOOR_LABEL,
        ),
    )
    for key, figure, label in info:
        emit(key, figure, sandman=by[label].stats, peers=[floor], base="C floor")


if __name__ == "__main__":
    raise SystemExit(main("Time sandman's spawn path in process.", measure, runs=5, per_round=20))
