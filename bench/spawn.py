"""From `sandman apply` to the init running, beside crun, runc, lxc-execute, bwrap and
systemd-nspawn, and the host memory a running sandbox costs.

`sudo .venv/bin/python bench/spawn.py [--runs 5] [--runs-many 3] [--warmups 1]`

Whole processes, interleaved, on the one busybox rootfs: `sandman apply DIR` of 1 and of 50
`/bin/sleep 1000` sandboxes (default namespaces, no `[network]`; it returns once every init has
exec'd), `crun run -d` once and 50 times, `runc run -d` of crun's bundle (detached: they return
once the container runs), and `bwrap`, `systemd-nspawn` and `lxc-execute` of `/bin/true` to its
exit (they cannot detach); `sandman destroy`, `crun`/`runc delete -f` after each, untimed. Right
after each detached run a census of /proc (census.py) checks that the inits run the command and
sums the resident memory of the host processes that exist only because of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager

from census import Census, Snapshot, census, snapshot
from harness import (
    SLEEP,
    CrunMounts,
    Instance,
    Peer,
    Session,
    Trial,
    bwrap_true,
    command,
    crun_bundle,
    emit,
    importtime,
    main,
    options,
    print_packages,
    print_trials,
    run_rounds,
    sandbox_unit,
)

MANY = 50
NSPAWN_LIMIT = 2.0
CRUN_LIMIT = 1.0
# --register=no --keep-unit: no machined and no transient scope (systemd is not PID 1 here);
# --pipe: no pty; the rest keep nspawn from writing into the shared rootfs.
NSPAWN_FLAGS = "--quiet --register=no --keep-unit --pipe --resolv-conf=off --timezone=off"
LXC_CONFIG = """lxc.rootfs.path = dir:{rootfs}
lxc.uts.name = smlxc
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
lxc.mount.auto = proc:rw
"""


class Counted:
    """The censuses taken right after each kept start of a trial (`inits()`: the PIDs the tool
    reports for its inits)."""

    def __init__(
        self, trial: Trial, marker: str, count: int, inits: Callable[[], list[int]]
    ) -> None:
        self.censuses: list[Census] = []
        self.marker, self.count, self.inits = marker, count, inits
        self.taken: Snapshot = {}
        trial.before, trial.after = self.before, self.after

    def before(self) -> None:
        self.taken = snapshot()

    def after(self, keep: bool) -> None:
        if keep:
            now = snapshot()
            found = census(
                self.taken,
                now,
                init_pids=self.inits(),
                command=SLEEP,
                marker=self.marker,
                count=self.count,
            )
            self.censuses.append(found)


def sandman_trial(session: Session, count: int) -> tuple[Trial, Counted]:
    names = [f"s{n:02d}" for n in range(1, count + 1)]
    instance = Instance.make(
        session, str(count), {f"{n}.sandbox.toml": sandbox_unit() for n in names}
    )
    trial = Trial(f"sandman apply, {count}", instance.apply, instance.destroy)
    return trial, Counted(trial, session.workdir, count, lambda: instance.init_pids(names))


def oci_trial(
    session: Session, tool: str, ids: Sequence[str], mounts: CrunMounts | None
) -> tuple[Trial, Counted]:
    """`TOOL run -d` of the bundle for each id; `TOOL delete -f` of every container after."""
    root, bundle = os.path.join(session.workdir, tool), os.path.join(session.workdir, "bundle")
    run = session.runner

    def start() -> None:
        for ident in ids:
            run.run((tool, "--root", root, "run", "-d", "--bundle", bundle, ident))

    def delete_all() -> None:
        listed = run.output((tool, "--root", root, "list", "-q")) if os.path.isdir(root) else ""
        for ident in listed.split():
            run.run((tool, "--root", root, "delete", "-f", ident))

    def inits() -> list[int]:
        states = (run.output((tool, "--root", root, "state", i)) for i in ids)
        return [int(json.loads(state)["pid"]) for state in states]

    context = mounts.entered if mounts is not None else contextlib.nullcontext
    label = f"{tool} run -d" if len(ids) == 1 else f"{len(ids)} x {tool} run -d"
    trial = Trial(label, start, delete_all, context=context, required=False)
    session.cleanup.add(f"{tool} delete -f", lambda: _in(context, delete_all))
    return trial, Counted(trial, session.workdir, len(ids), inits)


def _in(context: Callable[[], AbstractContextManager[None]], step: Callable[[], None]) -> None:
    with context():
        step()


def peers(session: Session, rootfs: str) -> tuple[list[Trial], dict[str, Counted]]:
    """The peers that are installed, as trials, and the censuses of the detached ones."""
    run, tag = session.runner, f"smbench{os.getpid()}"
    trials, censuses = [], {}
    if shutil.which("crun"):  # its bundle serves runc too
        crun_bundle(session, rootfs)
        mounts = CrunMounts(session)
        print(f"crun runs {mounts.where()}")
        for ids in ([f"{tag}-1"], [f"{tag}-{n:02d}" for n in range(1, MANY + 1)]):
            trial, censuses[f"crun{len(ids)}"] = oci_trial(session, "crun", ids, mounts)
            trial.rounds = session.args.runs if len(ids) == 1 else session.args.runs_many
            trials.append(trial)
    if shutil.which("runc") and "crun1" in censuses:  # runc, unlike crun, accepts the hybrid layout
        trial, censuses["runc"] = oci_trial(session, "runc", [f"{tag}r"], None)
        trials.append(trial)
    if shutil.which("bwrap"):
        trials.append(
            command(run, "bwrap", bwrap_true(rootfs, "--unshare-all", "--die-with-parent"))
        )
    if shutil.which("systemd-nspawn"):
        nspawn = ("systemd-nspawn", "-D", rootfs, *NSPAWN_FLAGS.split(), "--link-journal=no")
        trials.append(command(run, "systemd-nspawn", (*nspawn, "/bin/true")))
    if shutil.which("lxc-execute"):
        config = os.path.join(session.workdir, "lxc.conf")
        with open(config, "w", encoding="utf-8") as handle:
            handle.write(LXC_CONFIG.format(rootfs=rootfs))
        path = os.path.join(session.workdir, "lxc")
        os.mkdir(path)
        argv = ("lxc-execute", "-n", f"{tag}l", "-P", path, "-f", config, "--", "/bin/true")
        trials.append(command(run, "lxc-execute", argv))
    for trial in trials:
        trial.required = False
        trial.rounds = trial.rounds or session.args.runs  # a 1-sandbox run
    return trials, censuses


def worst(censuses: Sequence[Census]) -> float | None:
    return max((c.bytes_per_sandbox for c in censuses), default=None)


def print_censuses(censuses: dict[str, Counted]) -> None:
    print("census after each detached run (bench/census.py), worst run:")
    for label, counted in censuses.items():
        if taken := counted.censuses:
            bad = max(taken, key=lambda c: c.extra_bytes)
            ran = sum(c.all_running for c in taken)
            shown = "; ".join(p.describe() for p in bad.extra[:3]) or "none"
            print(
                f"  {label}: all inits exec'd in {ran}/{len(taken)} runs; host processes there "
                f"for them: {len(bad.extra)}, {bad.extra_bytes} B ({shown})"
            )


def emit_rows(by: dict[str, Trial], counted: dict[str, Counted]) -> None:
    censuses = {key: c.censuses for key, c in counted.items()}

    def peer(label: str, short: str) -> Peer:
        return by[label].peer(short) if label in by else Peer(short, why="n/a: not installed")

    one, many = by["sandman apply, 1"], by[f"sandman apply, {MANY}"]
    emit(
        "apply_1",
        "whole `apply` of 1 sandbox, no network, until init runs",
        sandman=one.stats,
        peers=[
            peer("systemd-nspawn", "systemd-nspawn"),
            peer("runc run -d", "runc"),
            peer("lxc-execute", "lxc-execute"),
            peer("crun run -d", "crun"),
            peer("bwrap", "bwrap"),
        ],
        base="systemd-nspawn",
        limit=NSPAWN_LIMIT,
        target=f"<= {NSPAWN_LIMIT:g}x nspawn",
        note="nspawn, lxc-execute, bwrap timed to /bin/true's exit; crun, runc detached",
    )
    each = ""
    if one.stats and many.stats:
        each = f"{(many.stats.median - one.stats.median) / (MANY - 1):.1f} ms per extra sandbox"
    emit(
        "apply_50",
        f"`apply` of {MANY} sandboxes, no network",
        sandman=many.stats,
        peers=[peer(f"{MANY} x crun run -d", f"{MANY} x crun")],
        base=f"{MANY} x crun",
        limit=CRUN_LIMIT,
        target=f"<= {CRUN_LIMIT:g}x {MANY} crun runs",
        note=each,
    )
    mine = worst([*censuses["sandman1"], *censuses[f"sandman{MANY}"]])
    theirs = [
        Peer(f"{tool} detached", worst(censuses[key]))
        for tool, key in (("crun", f"crun{MANY}"), ("runc", "runc"))
        if censuses.get(key)
    ]
    emit(
        "memory",
        "host memory left per running sandbox (every host process that exists only for it)",
        value=mine,
        unit="B",
        peers=theirs,
        limit=0.0,
        target="0 bytes",
        note="nspawn and lxc-execute cannot detach: their monitor stays for the sandbox's life",
    )


def measure(session: Session) -> None:
    args = session.args
    rootfs = session.image()
    trials, censuses = peers(session, rootfs)
    for count, rounds in ((MANY, args.runs_many), (1, args.runs)):
        trial, censuses[f"sandman{count}"] = sandman_trial(session, count)
        trial.rounds = rounds
        trials.insert(0, trial)
    run_rounds(trials, max(args.runs, args.runs_many), args.warmups)
    print(f"apply to the init running: {args.runs} rounds of 1, {args.runs_many} of {MANY}")
    print_trials(trials)
    print_censuses(censuses)
    emit_rows({t.label: t for t in trials}, censuses)
    print_apply_imports(session)


def print_apply_imports(session: Session) -> None:
    """Where a cold apply's start-up goes: its imports by package, one run."""
    units = os.path.join(session.workdir, "units-1")
    state = os.path.join(session.workdir, "state-imports")
    apply = ("-m", "sandman", "apply", units, *session.paths(state))
    instance = Instance(session, units, state)
    session.cleanup.add("sandman destroy, imports", instance.take_down)
    print_packages("imports of `sandman apply` of 1", importtime(session, apply, runs=1))
    instance.destroy()


if __name__ == "__main__":
    parser = options("Time sandman apply to the init running, beside its peers.", runs=5)
    parser.add_argument("--runs-many", type=int, default=3, help=f"rounds of {MANY} (default 3)")
    raise SystemExit(main("bench/spawn.py", parser, measure))
