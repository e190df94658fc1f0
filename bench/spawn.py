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
import functools
import json
import os
import shutil
from collections.abc import Callable

from census import Censuses
from harness import Instance, Peer, Session, Trial, emit, main, peer_of, sandbox_unit
from peers import CrunMounts, bwrap_true, crun_bundle

MANY = 50
NSPAWN_LIMIT = 2.0
CRUN_LIMIT = 1.0
# --register=no --keep-unit: no machined and no transient scope (systemd is not PID 1 here);
# --pipe: no pty; the rest keep nspawn from writing into the shared rootfs.
NSPAWN = (
    "--quiet --register=no --keep-unit --pipe --resolv-conf=off --timezone=off --link-journal=no"
)
Inits = Callable[[], list[int]]  # the PIDs of a run's inits, from the tool's own state
LXC_CONFIG = """lxc.rootfs.path = dir:{rootfs}
lxc.uts.name = smlxc
lxc.net.0.type = empty
lxc.apparmor.profile = unconfined
lxc.mount.auto = proc:rw
"""


class Spawn:
    """The contenders of one session, by label, and the censuses of the detached ones."""

    def __init__(self, session: Session) -> None:
        self.session, self.tag = session, f"smbench{os.getpid()}"
        self.trials: dict[str, Trial] = {}
        self.censuses: dict[str, Censuses] = {}

    def add(self, trial: Trial, rounds: int, count: int = 0, inits: Inits | None = None) -> None:
        trial.rounds = rounds
        self.trials[trial.label] = trial
        if inits is not None:
            self.censuses[trial.label] = Censuses(trial, self.session.workdir, count, inits)

    def sandman(self, count: int, rounds: int) -> None:
        names = [f"s{n:02d}" for n in range(1, count + 1)]
        units = {f"{n}.sandbox.toml": sandbox_unit() for n in names}
        instance = Instance.make(self.session, str(count), units)
        trial = Trial(f"sandman apply, {count}", instance.apply, instance.destroy)
        self.add(trial, rounds, count, functools.partial(instance.init_pids, names))

    def oci(self, tool: str, ids: list[str], rounds: int, mounts: CrunMounts | None) -> None:
        """`TOOL run -d` of the bundle for each id; `TOOL delete -f` of every container after."""
        root, bundle = (os.path.join(self.session.workdir, name) for name in (tool, "bundle"))
        run = self.session.runner
        context = mounts.entered if mounts is not None else contextlib.nullcontext

        def start() -> None:
            for ident in ids:
                run.run((tool, "--root", root, "run", "-d", "--bundle", bundle, ident))

        def delete_all() -> None:
            listed = run.output((tool, "--root", root, "list", "-q")) if os.path.isdir(root) else ""
            for ident in listed.split():
                run.run((tool, "--root", root, "delete", "-f", ident))

        def remove() -> None:
            with context():
                delete_all()

        def inits() -> list[int]:
            states = (run.output((tool, "--root", root, "state", ident)) for ident in ids)
            return [int(json.loads(state)["pid"]) for state in states]

        self.session.cleanup.add(f"{tool} delete -f", remove)
        label = f"{tool} run -d" if len(ids) == 1 else f"{len(ids)} x {tool} run -d"
        trial = Trial(label, start, delete_all, context=context, required=False)
        self.add(trial, rounds, len(ids), inits)

    def peers(self, rootfs: str) -> None:
        """The peers that are installed; a 1-sandbox run has --runs rounds."""
        args, tag, command = self.session.args, self.tag, self.session.command
        if shutil.which("crun"):  # its bundle serves runc too
            crun_bundle(self.session, rootfs)
            mounts = CrunMounts(self.session)
            print(f"crun runs {mounts.where()}")
            self.oci("crun", [f"{tag}-1"], args.runs, mounts)
            self.oci("crun", [f"{tag}-{n:02d}" for n in range(1, MANY + 1)], args.runs_many, mounts)
            if shutil.which("runc"):  # runc, unlike crun, accepts the hybrid layout
                self.oci("runc", [f"{tag}r"], args.runs, None)
        if shutil.which("bwrap"):
            self.add(
                command("bwrap", bwrap_true(rootfs, "--unshare-all", "--die-with-parent")),
                args.runs,
            )
        if shutil.which("systemd-nspawn"):
            argv = ("systemd-nspawn", "-D", rootfs, *NSPAWN.split(), "/bin/true")
            self.add(command("systemd-nspawn", argv), args.runs)
        if shutil.which("lxc-execute"):
            config, path = (
                os.path.join(self.session.workdir, name) for name in ("lxc.conf", "lxc")
            )
            with open(config, "w", encoding="utf-8") as handle:
                handle.write(LXC_CONFIG.format(rootfs=rootfs))
            os.mkdir(path)
            argv = ("lxc-execute", "-n", f"{tag}l", "-P", path, "-f", config, "--", "/bin/true")
            self.add(command("lxc-execute", argv), args.runs)
        for trial in self.trials.values():  # a peer that fails is left out, with its error
            trial.required = trial.label.startswith("sandman")


def emit_rows(by: dict[str, Trial], censuses: dict[str, Censuses]) -> None:
    one, many = by["sandman apply, 1"], by[f"sandman apply, {MANY}"]
    emit(
        "apply_1",
        "whole `apply` of 1 sandbox, no network, until init runs",
        sandman=one.stats,
        peers=[
            peer_of(by, "systemd-nspawn"),
            peer_of(by, "runc run -d", "runc"),
            peer_of(by, "lxc-execute"),
            peer_of(by, "crun run -d", "crun"),
            peer_of(by, "bwrap"),
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
        peers=[peer_of(by, f"{MANY} x crun run -d", f"{MANY} x crun")],
        base=f"{MANY} x crun",
        limit=CRUN_LIMIT,
        target=f"<= {CRUN_LIMIT:g}x {MANY} crun runs",
        note=each,
    )
    worst = {label: c.worst() for label, c in censuses.items()}
    mine = [w for w in (worst[one.label], worst[many.label]) if w is not None]
    detached = (("crun", f"{MANY} x crun run -d"), ("runc", "runc run -d"))
    theirs = [Peer(f"{t} detached", worst[k]) for t, k in detached if worst.get(k) is not None]
    emit(
        "memory",
        "host memory left per running sandbox (every host process that exists only for it)",
        value=max(mine, default=None),
        unit="B",
        peers=theirs,
        limit=0.0,
        target="0 bytes",
        note="nspawn and lxc-execute cannot detach: their monitor stays for the sandbox's life",
    )


def measure(session: Session) -> None:
    args = session.args
    rootfs = session.image()
    spawn = Spawn(session)
    spawn.sandman(1, args.runs)
    spawn.sandman(MANY, args.runs_many)
    spawn.peers(rootfs)
    title = f"apply to the init running: {args.runs} rounds of 1, {args.runs_many} of {MANY}"
    session.rounds(title, list(spawn.trials.values()), max(args.runs, args.runs_many))
    print("census after each detached run (bench/census.py), worst run:")
    for label, censuses in spawn.censuses.items():
        print(f"  {label}: {censuses.describe()}")
    emit_rows(spawn.trials, spawn.censuses)
    # Where a cold apply's start-up goes: its imports by package, one run.
    units = os.path.join(session.workdir, "units-1")
    instance = Instance(session, units, os.path.join(session.workdir, "state-imports"))
    session.cleanup.add("sandman destroy, imports", instance.take_down)
    imports = session.importtime(instance.argv("apply")[1:], runs=1)  # without the interpreter
    imports.print_packages("imports of `sandman apply` of 1")
    instance.destroy()


if __name__ == "__main__":
    raise SystemExit(main("Time sandman apply beside its peers.", measure, runs=5, runs_many=3))
