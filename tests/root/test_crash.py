"""Crash safety: an apply (or destroy) SIGKILLed after any of its steps is finished by the next one.

`SANDMAN_FAULT_AFTER=N` makes sandman SIGKILL itself right after its N-th step (a cgroup made, an
init started, a record written...), `SANDMAN_FAULT_TRACE=FILE` lists the steps. For every step of
a representative apply (a network with NAT, a slice, three sandboxes with mounts and ports, one of
them with a persistent upper dir) the test kills there, applies again, and compares the host with
what a clean apply made: the same records, cgroups, links and rules, every init running, no
orphan (a plan after it has nothing to do), and the persistent data untouched. The same for the
steps of a destroy and of a prune.

The host is read without sandman: records as files, cgroups as directories, links from
/sys/class/net, rules from a netlink dump of the instance's table.
"""

from __future__ import annotations

import json
import os
import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
import test_networks as networks
import test_sandboxes as base
from test_networks import Lab, network_unit, sandbox_unit
from test_sandboxes import Result, Sandman, alive, cgroup_dirs, unit

from sandman.kernel import net_dump

pytestmark = pytest.mark.root

busybox_image = base.busybox_image
lab = networks.lab

KILLED = -signal.SIGKILL  # subprocess's code for a child ended by SIGKILL
DATA = "written before the crashes\n"


@dataclass(frozen=True)
class HostState:
    """What the instance has on the host, in terms that do not change across a recreate."""

    records: dict[str, str]  # kind/name -> digest
    cgroups: frozenset[str]  # relative to each hierarchy, in any of them
    links: frozenset[str]
    rules: frozenset[str]  # chain + comment
    runtime_dirs: frozenset[str]


def host_state(lab: Lab) -> HostState:
    sm = lab.sm
    records = {}
    for path in sm.state_dir.glob("*/*.json"):
        records[f"{path.parent.name}/{path.stem}"] = json.loads(path.read_text())["digest"]
    cgroups = set()
    for top in cgroup_dirs(sm.base):
        root = os.path.dirname(top)
        cgroups |= {os.path.relpath(d, root) for d, _, _ in os.walk(top)}
    links = networks.host_links(f"{lab.tag}-", f"{lab.tag}b-")
    rules = {f"{r.chain} {r.comment}" for r in net_dump.dump_rules(lab.tag)}
    runtime = sm.state_dir / "sandboxes"
    dirs = {p.name for p in runtime.iterdir() if p.is_dir()} if runtime.is_dir() else set()
    return HostState(
        records, frozenset(cgroups), frozenset(links), frozenset(rules), frozenset(dirs)
    )


def write_units(lab: Lab) -> None:
    sm = lab.sm
    shared = sm.root / "shared"
    shared.mkdir(exist_ok=True)
    sm.write("lan", network_unit(lab.subnet, nat=True), kind="network")
    sm.write("tier", '[slice]\nmemory_max = "256M"\npids_max = 200\n', kind="slice")
    mounts = f'[[mount]]\ntype = "bind"\nsource = "{shared}"\ntarget = "/shared"\n'
    mounts += '[[mount]]\ntype = "tmpfs"\ntarget = "/scratch"\nsize = "8M"\n'
    for index, name in enumerate(("alpha", "beta", "gamma")):
        ports = [{"host": networks.free_port(), "sandbox": 80}] if index < 2 else []
        text = sandbox_unit("lan", ports=ports, sandbox='slice = "tier"\nrestart = "always"')
        text += mounts
        if name == "gamma":
            text = text.replace(
                "[sandbox]", '[rootfs]\nimage = "busybox"\npersistent = true\n\n[sandbox]', 1
            )
        sm.write(name, text)


def apply_with_fault(
    sm: Sandman, step: int | None, trace: Path | None = None, expect: int | None = None
) -> Result:
    env = {}
    if step is not None:
        env["SANDMAN_FAULT_AFTER"] = str(step)
    if trace is not None:
        env["SANDMAN_FAULT_TRACE"] = str(trace)
    return sm.run("apply", str(sm.units), expect=expect, env=env)


def steps_of(trace: Path) -> list[str]:
    return trace.read_text().splitlines() if trace.exists() else []


def assert_converged(lab: Lab, reference: HostState, context: str) -> None:
    sm = lab.sm
    now = host_state(lab)
    assert now == reference, f"{context}: the host differs from a clean apply's\n{now}\n{reference}"
    sm.note_records()
    for name in ("alpha", "beta", "gamma"):
        pid, start = sm.init(name)
        assert alive(pid, start), f"{context}: the init of {name} does not run"
    planned = sm.run("plan", str(sm.units), "--detailed-exitcode", expect=None)
    assert planned.code == 0, f"{context}: a plan after the re-apply still has work\n{planned}"


def test_an_apply_killed_after_any_step_is_finished_by_the_next(lab: Lab) -> None:
    sm = lab.sm
    write_units(lab)
    trace = sm.root / "trace"
    apply_with_fault(sm, None, trace, expect=0)
    sm.note_records()
    steps = steps_of(trace)
    assert len(steps) >= 20, f"a representative apply has few steps: {steps}"
    reference = host_state(lab)
    assert_converged(lab, reference, "the clean apply")
    upper = Path(sm.runtime("gamma")["upper"])
    sm.sh("gamma", f"printf '{DATA}' > /kept")
    assert (upper / "kept").read_text() == DATA
    sm.destroy(str(sm.units))
    assert not sm.leftovers(), sm.leftovers()

    for number, what in enumerate(steps, start=1):
        killed = apply_with_fault(sm, number)
        assert killed.code == KILLED, f"step {number} ({what}) did not kill the apply\n{killed}"
        sm.note_records()
        again = sm.apply()
        assert_converged(lab, reference, f"killed after step {what!r}, then applied\n{again}")
        assert (upper / "kept").read_text() == DATA, f"step {what!r}: the persistent data changed"
        sm.destroy(str(sm.units))
        assert not sm.leftovers(), f"step {what!r}: destroy left {sm.leftovers()}"
        assert not lab.leftovers(), f"step {what!r}: destroy left {lab.leftovers()}"


def test_a_destroy_or_prune_killed_after_any_step_is_finished_by_the_next(lab: Lab) -> None:
    sm = lab.sm
    write_units(lab)
    sm.apply()
    trace = sm.root / "trace"
    sm.run("destroy", str(sm.units), env={"SANDMAN_FAULT_TRACE": str(trace)})
    steps = steps_of(trace)
    assert len(steps) >= 10, f"a destroy has few steps: {steps}"
    for number, what in enumerate(steps, start=1):
        sm.apply()
        killed = sm.run(
            "destroy", str(sm.units), expect=None, env={"SANDMAN_FAULT_AFTER": str(number)}
        )
        assert killed.code == KILLED, f"step {number} ({what}) did not kill destroy\n{killed}"
        sm.destroy(str(sm.units))
        assert not lab.leftovers(), f"destroy killed after {what!r}, then run again, left some"

    # Prune: the units of one sandbox and of the slice go; the apply that removes them is killed.
    sm.apply()
    pruned = sm.root / "pruned"
    pruned.mkdir()
    for path in sm.units.iterdir():
        if not path.name.startswith(("beta.", "tier.")):
            (pruned / path.name).write_text(path.read_text().replace('slice = "tier"\n', ""))
    trace = sm.root / "prune-trace"
    sm.run("apply", str(pruned), env={"SANDMAN_FAULT_TRACE": str(trace)})
    sm.note_records()
    reference_after_prune = host_state(lab)
    prune_steps = steps_of(trace)
    for number, what in enumerate(prune_steps, start=1):
        sm.apply()
        killed = sm.run("apply", str(pruned), expect=None, env={"SANDMAN_FAULT_AFTER": str(number)})
        assert killed.code == KILLED, f"prune step {number} ({what}) did not kill the apply"
        sm.run("apply", str(pruned))
        sm.note_records()
        assert host_state(lab) == reference_after_prune, f"prune killed after {what!r}"
        planned = sm.run("plan", str(pruned), "--detailed-exitcode", expect=None)
        assert planned.code == 0, f"prune killed after {what!r}: still work\n{planned}"


def test_orphans_are_shown_by_plan_and_removed_by_apply(lab: Lab) -> None:
    """What a crash between making an object and recording it leaves, made by hand here."""
    sm = lab.sm
    sm.write("lan", network_unit(lab.subnet), kind="network")
    sm.write("one", unit())
    sm.apply()
    # A cgroup, a runtime dir and a record's temporary file that no record owns, a bridge named
    # like the instance's, and a process in that cgroup.
    stray = cgroup_dirs(sm.base)[0] + "/ghost"
    os.mkdir(stray)
    ghost = sm.state_dir / "sandboxes" / "ghost"
    ghost.mkdir()
    (sm.state_dir / "sandboxes" / "ghost.json.tmp").write_text("{")
    from pyroute2 import IPRoute

    with IPRoute() as ipr:
        ipr.link("add", ifname=f"{lab.tag}b-ghost", kind="bridge")
    sleeper = os.fork()
    if sleeper == 0:
        try:
            Path(stray, "cgroup.procs").write_text(str(os.getpid()))
            os.execv("/bin/sleep", ["sleep", "1000"])
        finally:
            os._exit(1)
    try:
        base.wait_for(lambda: str(sleeper) in Path(stray, "cgroup.procs").read_text(), "the join")
        plan = json.loads(sm.run("plan", str(sm.units), "--json").out)
        orphans = {a["object"] for a in plan["actions"] if a["reason"] == "orphan"}
        assert orphans == {
            f"cgroup/{sm.base}/ghost",
            f"link/{lab.tag}b-ghost",
            "path/sandboxes/ghost",
            "path/sandboxes/ghost.json.tmp",
        }, plan
        text = sm.run("plan", str(sm.units)).out
        assert f"- link/{lab.tag}b-ghost: remove the orphan" in text, text
        # --no-prune leaves them alone.
        kept = sm.run("plan", str(sm.units), "--no-prune", "--detailed-exitcode", expect=None)
        assert kept.code == 0, kept
        sm.apply()
        base.wait_for(lambda: not alive(sleeper), "the orphan cgroup's process to die")
        assert not os.path.exists(stray)
        assert not ghost.exists()
        assert not (sm.state_dir / "sandboxes" / "ghost.json.tmp").exists()
        assert f"{lab.tag}b-ghost" not in networks.host_links(lab.tag)
        assert sm.running_init("one")
        lab_plan = sm.run("plan", str(sm.units), "--detailed-exitcode", expect=None)
        assert lab_plan.code == 0, lab_plan
    finally:
        if alive(sleeper):
            os.kill(sleeper, signal.SIGKILL)
        os.waitpid(sleeper, 0)


def test_a_destroy_that_leaves_nothing_applied_takes_the_orphans_too(lab: Lab) -> None:
    sm = lab.sm
    sm.write("one", unit())
    sm.apply()
    stray = Path(cgroup_dirs(sm.base)[0], "ghost")
    stray.mkdir()
    ghost = sm.state_dir / "sandboxes" / "ghost"
    ghost.mkdir()
    sm.destroy("one")
    assert not stray.exists() and not ghost.exists()
    assert not sm.leftovers(), sm.leftovers()
