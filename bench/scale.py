"""100 sandboxes with network, ports and limits: apply, no-op apply, status, destroy, beside a
crun + iproute2 + nft script; and the imports of every verb.

One network (`nat = true`) and 100 `/bin/sleep 1000` sandboxes, each with a port forward from
127.0.0.1 and three limits. Beside it the script a user would write (peers.py): per sandbox
`crun run -d`, the limits written into crun's v1 cgroups, a veth born in the container's netns,
`ip netns attach`, address, route and DNAT rules; its teardown. Per round: the script's setup and
teardown; `sandman apply`; with the 100 running, `--repeat` interleaved runs of a no-op apply,
`validate DIR`, `python -c "import pydantic, pyroute2, tomli"`, `status`, `python -c pass`; then
`sandman destroy`. After the rounds, `python -X importtime` of every verb.
"""

from __future__ import annotations

import contextlib
import os

from harness import Instance, Peer, Session, Stats, Trial, emit, main, networked_units, table
from peers import CrunMounts, Names, crun_bundle, entries, network_setup, network_teardown

MANY = 100
PORTS = 44000  # sandman's host ports PORTS+1..; the script's PORTS+500+1..
LIMITS = '\n[resources]\nmemory_max = "64M"\ncpu_max = "50%"\npids_max = 64\n'
DEPS = "pydantic, pyroute2, tomli"
SETUP = network_setup(
    'crun --root "$CRUN_ROOT" run -d --pid-file "$CRUN_ROOT/$name.pid" --bundle "$BUNDLE" "$name"',
    'pid=$(<"$CRUN_ROOT/$name.pid")',
    'echo $((64 << 20)) > "/sys/fs/cgroup/memory/$name/memory.limit_in_bytes"',
    'echo 50000 > "/sys/fs/cgroup/cpu/$name/cpu.cfs_quota_us"',
    'echo 64 > "/sys/fs/cgroup/pids/$name/pids.max"',
    'ip link add "$veth" type veth peer name eth0 netns "$pid"',
    'ip link set "$veth" master "$BRIDGE" up',
    'ip netns attach "$name" "$pid"',
)
TEARDOWN = network_teardown(
    'crun --root "$CRUN_ROOT" delete -f "$PREFIX-$i"\nip netns del "$PREFIX-$i"'
)


def units(names: Names, count: int) -> dict[str, str]:
    """The network and `count` sandboxes with a port forward and the limits (daemon.py's too)."""
    return networked_units(names.sandman_net, count, PORTS, 'stop_timeout = "1s"\n' + LIMITS)


class Script:
    """The hand-written script, run where crun runs; what an interrupted run of it left
    (containers, their cgroups; netns, links and table are Names') goes at the end."""

    def __init__(self, session: Session, names: Names, rootfs: str) -> None:
        self.session, self.names = session, names
        self.root = os.path.join(session.workdir, "crun")
        self.mounts = CrunMounts(session)
        bodies = {"setup": SETUP, "teardown": TEARDOWN}
        bundle = crun_bundle(session, rootfs)
        self.paths = names.write(PORTS + 500, bodies, CRUN_ROOT=self.root, BUNDLE=bundle)
        session.cleanup.add("the script's containers", self.remove_containers)

    def run(self, step: str, count: int) -> None:
        with self.mounts.entered():
            self.session.run(("bash", self.paths[step], str(count)))

    def trial(self) -> Trial:
        label = "script: crun + iproute2 + nft + cgroup writes; its teardown"
        setup, teardown = (lambda: self.run("setup", MANY)), (lambda: self.run("teardown", MANY))
        return Trial(label, setup, teardown, timed_stop=True, settle=self.names.settle)

    def check(self) -> None:
        self.run("setup", 1)
        try:
            with self.mounts.entered():  # where the script's netns names are
                inside = self.session.output(("ip", "-n", f"{self.names.prefix}-1", "addr"))
            memory = f"/sys/fs/cgroup/memory/{self.names.prefix}-1/memory.limit_in_bytes"
            with open(memory, encoding="ascii") as handle:
                limit = handle.read().strip()
        finally:
            self.run("teardown", 1)
            self.names.settle()
        addresses = [t for t in inside.split() if "/" in t and t[0].isdigit()]
        print(f"checked: the script's sandbox 1 has {addresses} and memory limit {limit}")

    def remove_containers(self) -> None:
        session, prefix = self.session, f"{self.names.prefix}-"
        with self.mounts.entered():
            if os.path.isdir(self.root):
                for ident in session.output(("crun", "--root", self.root, "list", "-q")).split():
                    session.run(("crun", "--root", self.root, "delete", "-f", ident))
            for netns in entries("/run/netns", prefix):
                session.run(("ip", "netns", "del", os.path.basename(netns)))
        for top in os.listdir("/sys/fs/cgroup"):
            for entry in entries(os.path.join("/sys/fs/cgroup", top), prefix):
                with contextlib.suppress(OSError):
                    os.rmdir(entry)


def check_sandman(session: Session, instance: Instance) -> None:
    """Every sandbox runs after an apply, and a second apply changes nothing."""
    instance.apply()
    try:
        instance.check_running(MANY)
        again = session.output(instance.argv("apply")).strip().splitlines()[-1:]
    finally:
        instance.destroy()
        instance.settle()
    print(f"checked: {MANY} sandboxes running after apply; a second apply: {again}")


def sandman_trials(session: Session, instance: Instance) -> tuple[Trial, list[Trial]]:
    """apply, then with the sandboxes running `--repeat` rounds of the hot commands, destroy."""
    py = session.python
    hot = [
        session.command("sandman apply, no-op", instance.argv("apply")),
        session.command("sandman validate DIR", session.sandman("validate", instance.units)),
        session.command(f'python -c "import {DEPS}"', (py, "-c", f"import {DEPS}")),
        session.command("sandman status", instance.argv("status")),
        session.command("python -c pass", (py, "-c", "pass")),
    ]

    def while_running(keep: bool) -> None:
        for _ in range(session.args.repeat):
            for trial in hot:
                trial.once(keep)

    label = f"sandman apply ({MANY}, network, ports, limits); destroy"
    trial = Trial(label, instance.apply, instance.destroy, timed_stop=True, after=while_running)
    trial.settle = instance.settle
    return trial, hot


def emit_rounds(script: Trial, sandman: Trial, hot: list[Trial]) -> None:
    noop, validate, deps, status, bare = (t.stats for t in hot)
    assert noop and validate and deps and status and bare
    script_down, sandman_down = Stats(tuple(script.down)), Stats(tuple(sandman.down))
    rows = (
        ("apply_100_net", f"`apply` of {MANY} sandboxes with network, ports and limits",
         sandman.stats, [script.peer("script")], 0.7, "that script"),
        ("noop_apply", f"no-op `apply` over {MANY} running sandboxes (network, limits)",
         noop, [Peer("deps import", deps.median), Peer("validate", validate.median)],
         1.0, "that import"),
        ("noop_apply_validate", "no-op `apply` over the same, against `validate` (issue #7)",
         noop, [Peer("validate", validate.median)], 2.0, "`validate` of the dir"),
        ("status_100", f"`status` of {MANY} running sandboxes",
         status, [Peer("python -c pass", bare.median)], 3.0, "`python -c pass`"),
        ("teardown_100_net", f"teardown of {MANY} sandboxes with network (`destroy`)",
         sandman_down, [Peer("script", script_down.median)], 1.0, "the script's teardown"),
    )  # fmt: skip
    for key, figure, mine, peers, limit, yardstick in rows:
        per = key in ("apply_100_net", "teardown_100_net") and mine is not None
        emit(
            key,
            figure,
            sandman=mine,
            peers=peers,
            base=peers[0].label,
            limit=limit,
            target=f"<= {limit}x {yardstick}",
            note=f"{mine.median / MANY:.1f} ms per sandbox" if per and mine else "",
        )


# The verbs whose imports are a row: its key, and what it must not import. A no-op apply over
# units the unit cache knows loads no unit model (sandman/units/cache.py).
FORBIDDEN = {
    "status": ("imports_status", ("pyroute2", "pydantic")),
    "validate": ("imports_validate", ("pyroute2",)),
    "apply (no-op)": ("imports_noop_apply", ("pydantic",)),
}


def verb_imports(session: Session, instance: Instance) -> None:
    """`python -X importtime` of every verb with the sandboxes running (destroy last): the
    status and validate rows (what they must not import), the others for information."""
    instance.apply()
    session.output(instance.argv("apply"))  # the unit cache keeps the addresses just given
    paths = session.paths(instance.state)
    verbs = {
        "--help": ("--help",),
        "validate": ("validate", instance.units),
        "plan": ("plan", instance.units, *paths),
        "schema": ("schema",),
        "images": ("images", "--image-dir", session.images),
        "status": ("status", *paths),
        "status --json": ("status", "--json", *paths),
        "logs": ("logs", "n001", *paths),
        "exec": ("exec", "n001", *paths, "--", "/bin/true"),
        "apply (no-op)": ("apply", instance.units, *paths),
        "destroy": ("destroy", instance.units, *paths),
    }
    rows, others = [], []
    for verb, argv in verbs.items():
        imports = session.importtime(("-m", "sandman", *argv), runs=1 if verb == "destroy" else 3)
        heavy = [m for m in ("pyroute2", "pydantic") if imports.under(m)]
        rows.append([verb, f"{imports.total:.1f}", str(len(imports.self_ms)), " ".join(heavy)])
        key, forbidden = FORBIDDEN.get(verb, ("", ()))
        if not forbidden:
            others.append(f"{verb} {imports.total:.1f} ms" + "".join(f" +{m}" for m in heavy))
            continue
        hits = [m for m in forbidden if m in heavy]
        emit(
            key,
            f"imports of `{verb}` (python -X importtime)",
            value=imports.total,
            target=f"no {' and no '.join(forbidden)}",
            verdict="MISSED: imports " + ", ".join(hits) if hits else "met",
            note=f"{len(imports.self_ms)} modules",
        )
    instance.settle()
    print(table(["verb", "import ms", "modules", "imports"], rows))
    emit("imports_other", "imports of the other verbs (info)", verdict="-", note="; ".join(others))


def measure(session: Session) -> None:
    names = Names(session)
    script = Script(session, names, session.image())
    instance = Instance.make(session, "scale", units(names, MANY))
    script.check()
    check_sandman(session, instance)
    theirs = script.trial()
    mine, hot = sandman_trials(session, instance)
    title = f"{MANY} sandboxes ({session.args.repeat} runs of each hot command a round)"
    session.rounds(title, [theirs, mine], shown=hot)
    emit_rounds(theirs, mine, hot)
    verb_imports(session, instance)


if __name__ == "__main__":
    raise SystemExit(main("Time 100 networked sandboxes beside crun.", measure, runs=3, repeat=3))
