"""From `sandman apply` to the init running, beside crun, runc, lxc-execute, bwrap and
systemd-nspawn, and the host memory a running sandbox costs.

Whole processes, interleaved, on the one busybox rootfs: `sandman apply DIR` of 1 and of 50
`/bin/sleep 1000` sandboxes (default namespaces, no `[network]`; it returns once every init has
exec'd), `crun run -d` and `runc run -d` of crun's bundle once and 50 times (detached: they
return once the container runs), and `bwrap`, `systemd-nspawn` and `lxc-execute` of `/bin/true`
to its exit (they cannot detach); `sandman destroy`, `crun`/`runc delete -f` after each, untimed.
Right after each detached run a census of /proc (census.py) checks that the inits run the command
and sums the resident memory of the host processes that exist only because of them. Last, where
a cold apply's start-up goes: its imports by package.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil

from census import Censuses
from harness import Instance, Peer, Session, Trial, emit, main, peer_of, sandbox_unit
from peers import CrunMounts, bwrap_true, crun_bundle

MANY = 50
# --register=no --keep-unit: no machined and no transient scope (systemd is not PID 1 here);
# --pipe: no pty; the rest keep nspawn from writing into the shared rootfs.
NSPAWN = "--quiet --register=no --keep-unit --pipe --resolv-conf=off --timezone=off "
NSPAWN += "--link-journal=no"
LXC = "lxc.uts.name = smlxc\nlxc.net.0.type = empty\nlxc.apparmor.profile = unconfined\n"
LXC += "lxc.mount.auto = proc:rw\nlxc.rootfs.path = dir:"


def sandman(session: Session, count: int, censuses: dict[str, Censuses]) -> Trial:
    names = [f"s{n:02d}" for n in range(1, count + 1)]
    instance = Instance.make(
        session, str(count), {f"{n}.sandbox.toml": sandbox_unit() for n in names}
    )
    trial = Trial(f"sandman apply, {count}", instance.apply, instance.destroy)
    trial.rounds = session.args.runs if count == 1 else session.args.runs_many
    inits = functools.partial(instance.init_pids, names)
    censuses[trial.label] = Censuses(trial, session.workdir, count, inits)
    return trial


def oci(
    session: Session,
    tool: str,
    ids: list[str],
    mounts: CrunMounts | None,
    censuses: dict[str, Censuses],
) -> Trial:
    """`TOOL run -d` of crun's bundle for each id; `TOOL delete -f` of every container after."""
    root, bundle = os.path.join(session.workdir, tool), os.path.join(session.workdir, "bundle")
    context = mounts.entered if mounts is not None else contextlib.nullcontext

    def start() -> None:
        for ident in ids:
            session.run((tool, "--root", root, "run", "-d", "--bundle", bundle, ident))

    def delete_all() -> None:
        listed = session.output((tool, "--root", root, "list", "-q")) if os.path.isdir(root) else ""
        for ident in listed.split():
            session.run((tool, "--root", root, "delete", "-f", ident))

    def remove() -> None:
        with context():
            delete_all()

    def inits() -> list[int]:
        states = (session.output((tool, "--root", root, "state", ident)) for ident in ids)
        return [int(json.loads(state)["pid"]) for state in states]

    session.cleanup.add(f"{tool} delete -f", remove)
    label = f"{tool} run -d" if len(ids) == 1 else f"{len(ids)} x {tool} run -d"
    trial = Trial(label, start, delete_all, context=context, required=False)
    trial.rounds = session.args.runs if len(ids) == 1 else session.args.runs_many
    censuses[label] = Censuses(trial, session.workdir, len(ids), inits)
    return trial


def peers(session: Session, rootfs: str, censuses: dict[str, Censuses]) -> list[Trial]:
    """The peers that are installed; one that fails is left out, with its error."""
    trials, tag = [], f"smbench{os.getpid()}"
    config = os.path.join(session.workdir, "lxc.conf")
    if shutil.which("crun"):  # its bundle serves runc too
        crun_bundle(session, rootfs)
        mounts = CrunMounts(session)
        print(f"crun runs {mounts.where()}")
        trials.append(oci(session, "crun", [f"{tag}-1"], mounts, censuses))
        many = [f"{tag}-{n:02d}" for n in range(1, MANY + 1)]
        trials.append(oci(session, "crun", many, mounts, censuses))
        if shutil.which("runc"):  # runc, unlike crun, accepts the hybrid layout
            trials.append(oci(session, "runc", [f"{tag}r"], None, censuses))
            many = [f"{tag}r{n:02d}" for n in range(1, MANY + 1)]
            trials.append(oci(session, "runc", many, None, censuses))
    nspawn = ("systemd-nspawn", "-D", rootfs, *NSPAWN.split(), "/bin/true")
    lxc = ("lxc-execute", "-n", f"{tag}l", "-P", session.workdir, "-f", config, "--", "/bin/true")
    bwrap = bwrap_true(rootfs, "--unshare-all", "--die-with-parent")
    commands = {"bwrap": bwrap, "systemd-nspawn": nspawn, "lxc-execute": lxc}
    with open(config, "w", encoding="utf-8") as handle:
        handle.write(LXC + rootfs + "\n")
    for label, argv in commands.items():
        if shutil.which(argv[0]):
            trials.append(session.command(label, argv))
            trials[-1].required, trials[-1].rounds = False, session.args.runs
    return trials


def emit_rows(by: dict[str, Trial], censuses: dict[str, Censuses]) -> None:
    one, many = by["sandman apply, 1"], by[f"sandman apply, {MANY}"]
    names = (
        ("systemd-nspawn", ""),
        ("runc run -d", "runc"),
        ("lxc-execute", ""),
        ("crun run -d", "crun"),
    )
    peers = [peer_of(by, label, short) for label, short in (*names, ("bwrap", ""))]
    note = "nspawn, lxc-execute, bwrap timed to /bin/true's exit; crun, runc detached"
    figure = "whole `apply` of 1 sandbox, no network, until init runs"
    emit(
        "apply_1",
        figure,
        sandman=one.stats,
        peers=peers,
        base="systemd-nspawn",
        limit=2.0,
        target="<= 2x nspawn",
        note=note,
    )
    notes = []
    if one.stats and many.stats:
        notes.append(
            f"{(many.stats.median - one.stats.median) / (MANY - 1):.1f} ms per extra sandbox"
        )
    crun = peer_of(by, f"{MANY} x crun run -d", f"{MANY} x crun")
    runc = peer_of(by, f"{MANY} x runc run -d", f"{MANY} x runc")
    if many.stats and runc.median:
        notes.append(f"{many.stats.median / runc.median:.2f}x {runc.label}")
    target = f"<= 1x {MANY} crun runs"
    emit(
        "apply_50",
        f"`apply` of {MANY} sandboxes, no network",
        sandman=many.stats,
        peers=[crun, runc],
        base=crun.label,
        limit=1.0,
        target=target,
        note="; ".join(notes),
    )
    worst = {label: c.worst() for label, c in censuses.items()}
    mine = [w for w in (worst[one.label], worst[many.label]) if w is not None]
    detached = (("crun", f"{MANY} x crun run -d"), ("runc", "runc run -d"))
    theirs = [Peer(f"{t} detached", worst[k]) for t, k in detached if worst.get(k) is not None]
    figure = "host memory left per running sandbox (every host process that exists only for it)"
    note = "nspawn and lxc-execute cannot detach: their monitor stays for the sandbox's life"
    emit(
        "memory",
        figure,
        value=max(mine, default=None),
        unit="B",
        peers=theirs,
        limit=0.0,
        target="0 bytes",
        note=note,
    )


def measure(session: Session) -> None:
    args, rootfs = session.args, session.image()
    censuses: dict[str, Censuses] = {}
    trials = [sandman(session, 1, censuses), sandman(session, MANY, censuses)]
    trials += peers(session, rootfs, censuses)
    title = f"apply to the init running ({args.runs_many} of the rounds with {MANY})"
    session.rounds(title, trials, max(args.runs, args.runs_many))
    print("census after each detached run (bench/census.py), worst run:")
    for label, taken in censuses.items():
        print(f"  {label}: {taken.describe()}")
    emit_rows({t.label: t for t in trials}, censuses)
    units = os.path.join(session.workdir, "units-1")
    instance = Instance(session, units, os.path.join(session.workdir, "state-imports"))
    session.cleanup.add("sandman destroy, imports", instance.take_down)
    # As the timed applies ran: after a first apply into the state dir kept the validators'
    # schemas (units/compiled.py); the unit cache knows the units, but a create loads them.
    instance.apply()
    instance.destroy()
    imports = session.importtime(instance.argv("apply")[1:], runs=1)  # without the interpreter
    imports.print_packages("imports of `sandman apply` of 1")
    instance.destroy()


if __name__ == "__main__":
    raise SystemExit(main("Time sandman apply beside its peers.", measure, runs=5, runs_many=3))
