"""`sandman stop`, `start` and `restart` (issue #17), checked from outside as root: the init's
PID in /proc, the processes of its cgroup, its links and rules, the records as files.

A stopped sandbox stays recorded and stopped: `apply` of the same units and the daemon leave it
so, `status` and `show` say so, `exec` says to start it, and `start` runs its recorded unit again
with a new init. Each test has the private instance of test_sandboxes.py's `sm` (or the `lab` of
test_networks.py, for links and rules), whose teardown fails the test on anything left behind.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest
import test_daemon
import test_networks as networks
import test_sandboxes as base
from test_daemon import Daemon
from test_networks import WEB, Lab, lab, network_unit, sandbox_unit
from test_sandboxes import (
    Sandman,
    alive,
    cgroup_dirs,
    processes_in_cgroup,
    sm,
    unit,
    wait_for,
)
from test_stop import KERNEL_KEEPS_EXITS

from sandman.kernel import net_dump

pytestmark = pytest.mark.root

busybox_image = base.busybox_image
daemon = test_daemon.daemon
__all__ = ["busybox_image", "daemon", "lab", "sm"]  # the fixtures, used by name

# An init with a child, so that its cgroup holds more than the init.
FAMILY = ("sh", "-c", "sleep 1000 & sleep 1000 & wait")


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_text().rstrip("\0").split("\0")


def stopped_record(sm: Sandman, name: str) -> bool:
    return bool(sm.record(name)["stopped"])


def assert_stopped(sm: Sandman, name: str, init: tuple[int, int]) -> None:
    """Nothing of it runs, its cgroup and runtime dir are gone, its record stays, stopped."""
    assert not alive(*init), f"the init of {name} (pid {init[0]}) still runs"
    assert processes_in_cgroup(sm.base, name) == []
    assert sm.sandbox_cgroups(name) == []
    assert not (sm.state_dir / "sandboxes" / name).exists()
    assert stopped_record(sm, name)
    assert sm.status_of(name)["state"] == "stopped" and sm.status_of(name)["pid"] is None


def test_stop_ends_the_init_and_its_cgroup_and_apply_leaves_it_stopped(sm: Sandman) -> None:
    sm.write("held", unit(command=FAMILY))
    sm.write("other", unit())
    sm.apply()
    held, other = sm.init("held"), sm.init("other")
    wait_for(lambda: len(processes_in_cgroup(sm.base, "held")) == 3, "the init and its children")

    done = sm.run("stop", "held")
    assert done.out == "Stop complete: 1 stopped.\n", done
    assert "[] sandbox/held: stop (stop asked): done in" in done.err, done
    assert_stopped(sm, "held", held)
    row = next(line for line in sm.run("status").out.splitlines() if line.startswith("held "))
    # The init, a shell without a handler, drops SIGTERM: the cgroup's kill ends it, which the
    # stop learns from the kernel where it keeps exits for a pidfd's holder (6.15).
    how = ["(SIGKILL)"] if KERNEL_KEEPS_EXITS else []
    expected = ["stopped", *how, "-", "-"]
    assert row.split()[1 : 1 + len(expected)] == expected, row
    shown = sm.run("show", "held").out
    assert "State: stopped since" in shown and "`sandman start held` runs it" in shown, shown
    assert "(cgroup none: nothing runs)" in shown, shown
    assert json.loads(sm.run("show", "held", "--json").out)["stopped_at"]

    again = sm.apply()
    assert "No changes" in again.out, again
    sm.run("plan", str(sm.units), "--detailed-exitcode")
    assert_stopped(sm, "held", held)
    assert sm.init("other") == other and alive(*other)
    twice = sm.run("stop", "held")
    assert twice.out == "Nothing to stop.\n" and "sandbox/held: already stopped" in twice.err


def test_start_runs_the_recorded_unit_with_a_new_init_and_restart_does_it_again(
    sm: Sandman,
) -> None:
    limits = '[resources]\npids_max = "max"\nmemory_max = "64M"\n'
    sm.write("job", unit(command=FAMILY, sandbox='environment = { ROLE = "worker" }', rest=limits))
    sm.apply()
    first = sm.init("job")
    digest = sm.record("job")["digest"]
    sm.run("stop", "job")
    # The unit file changes but is not applied: start runs what was applied, the record's unit.
    sm.write("job", unit(command=("sleep", "2000")))

    started = sm.run("start", "job")
    assert started.out == "Start complete: 1 started.\n", started
    assert "> sandbox/job: start (start asked): done in" in started.err, started
    sm.note_records()
    second = sm.init("job")
    assert alive(*second) and second[0] != first[0] and second[1] != first[1]
    assert cmdline(second[0]) == list(FAMILY)
    record = sm.record("job")
    assert record["digest"] == digest and not record["stopped"]
    assert sm.exec("job", "sh", "-c", "echo $ROLE").out == "worker\n"
    assert pids_max(sm, "job") == "max"
    assert sm.status_of("job")["state"] == "running"
    assert "sandbox/job: already running" in sm.run("start", "job").err

    restarted = sm.run("restart", "job")
    assert restarted.out == "Restart complete: 1 stopped, 1 started.\n", restarted
    sm.note_records()
    third = sm.init("job")
    assert alive(*third) and not alive(*second) and third[1] != second[1]
    assert sm.record("job")["digest"] == digest

    # Now the changed unit is applied, as ever: a recreate of the running sandbox.
    applied = sm.apply()
    assert "sandbox/job: recreate" in applied.err, applied
    assert cmdline(sm.running_init("job")) == ["sleep", "2000"]


def pids_max(sm: Sandman, name: str) -> str:
    """pids.max of the sandbox's cgroup, as the kernel has it."""
    for directory in cgroup_dirs(sm.base, name):
        path = Path(directory, "pids.max")
        if path.exists():
            return path.read_text().strip()
    pytest.fail(f"no pids.max for {name}")


def test_exec_into_a_stopped_or_exited_sandbox_says_to_start_it(sm: Sandman) -> None:
    sm.write("box", unit())
    sm.apply()
    sm.run("stop", "box")
    refused = sm.exec("box", "true", expect=1)
    assert "sandbox 'box' is stopped; `sandman start box` starts it" in refused.err, refused
    sm.run("start", "box")
    sm.note_records()
    pid, start = sm.init("box")
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not alive(pid, start), "the init to die")
    assert sm.status_of("box")["state"] == "exited"
    refused = sm.exec("box", "true", expect=1)
    assert "its init exited); `sandman start box` starts it again" in refused.err, refused
    sm.run("start", "box")
    sm.note_records()
    assert sm.running_init("box") != pid
    assert sm.exec("box", "true").code == 0


def test_unknown_names_are_refused_naming_them_and_nothing_changes(sm: Sandman) -> None:
    sm.write("box", unit())
    sm.apply()
    init = sm.init("box")
    for verb in ("stop", "start", "restart"):
        refused = sm.run(verb, "box", "nope", expect=2)
        assert refused.err == "sandman: sandbox/nope: nothing by that name is applied\n", refused
        assert sm.init("box") == init and alive(*init)
    refused = sm.run("stop", "network/lan", expect=2)
    assert "network/lan: only sandboxes stop and start" in refused.err, refused
    assert "usage: sandman restart" in sm.run("restart", "--help").out


def test_a_changed_unit_of_a_stopped_sandbox_is_recorded_and_run_by_start(sm: Sandman) -> None:
    sm.write("box", unit())
    sm.apply()
    init = sm.init("box")
    sm.run("stop", "box")
    sm.write("box", unit(command=("sleep", "2000")))
    planned = sm.run("plan", str(sm.units)).out
    assert "~ sandbox/box: update the stopped sandbox's record (sandbox.command)" in planned
    sm.apply()
    assert_stopped(sm, "box", init)
    assert sm.record("box")["unit"]["sandbox"]["command"] == ["sleep", "2000"]
    sm.run("start", "box")
    sm.note_records()
    assert cmdline(sm.running_init("box")) == ["sleep", "2000"]
    sm.run("plan", str(sm.units), "--detailed-exitcode")


def test_a_persistent_sandbox_keeps_its_files_and_ids_across_stop_and_start(sm: Sandman) -> None:
    sm.write("keeper", unit(rest='[rootfs]\nimage = "busybox"\npersistent = true\n'))
    sm.apply()
    sm.sh("keeper", "echo kept > /root/note && chmod 600 /root/note")
    ids = sm.runtime("keeper")["auto_ids"]
    sm.run("stop", "keeper")
    assert sm.runtime("keeper")["auto_ids"] == ids
    sm.run("start", "keeper")
    sm.note_records()
    assert sm.runtime("keeper")["auto_ids"] == ids
    assert sm.exec("keeper", "cat", "/root/note").out == "kept\n"


def test_a_stopped_sandbox_releases_its_network_and_gets_its_address_back(lab: Lab) -> None:
    sm = lab.sm
    port = networks.free_port()
    sm.write("lan", network_unit(lab.subnet), kind="network")
    sm.write("web", sandbox_unit("lan", command=WEB, ports=[{"host": port, "sandbox": 80}]))
    sm.write("peer", sandbox_unit("lan"))
    sm.apply()
    address = lab.address("web")
    lab.wait_web(port)
    peer = sm.init("peer")

    sm.run("stop", "web")
    assert networks.host_links(lab.veth("web")) == []
    assert [r for r in net_dump.dump_rules(lab.tag) if r.owner == "web"] == []
    assert networks.try_http_get("127.0.0.1", port) is None
    assert "\tweb\n" not in sm.exec("peer", "cat", "/etc/hosts").out
    # The address stays the stopped sandbox's: a new "auto" one takes the next.
    sm.write("late", sandbox_unit("lan"))
    sm.apply()
    assert lab.address("late") != address

    sm.run("start", "web")
    sm.note_records()
    assert lab.address("web") == address
    assert networks.host_links(lab.veth("web")) == [lab.veth("web")]
    lab.wait_web(port)
    assert f"PING web ({address.ip})" in lab.ping("peer", "web").out
    assert sm.init("peer") == peer
    lab.assert_no_changes()


def test_a_stop_cut_short_is_finished_by_the_next_apply(sm: Sandman) -> None:
    """Killed right after the record was marked stopped: the init still runs; the record says
    stopped, so nothing starts it again, and the next apply (or stop) finishes the stop."""
    sm.write("box", unit(command=FAMILY))
    sm.apply()
    init = sm.init("box")
    killed = sm.run("stop", "box", expect=None, env={"SANDMAN_FAULT_AFTER": "1"})
    assert killed.code == -signal.SIGKILL, killed
    assert alive(*init) and stopped_record(sm, "box")
    status = sm.status_of("box")
    assert status["state"] == "stopped" and status["drift"], status
    planned = sm.run("plan", str(sm.units)).out
    assert "! sandbox/box: stop: expected complete, found interrupted" in planned, planned
    sm.apply()
    assert_stopped(sm, "box", init)
    sm.run("plan", str(sm.units), "--detailed-exitcode")


def test_a_start_cut_short_is_finished_by_the_next_apply(sm: Sandman) -> None:
    sm.write("box", unit())
    sm.apply()
    sm.run("stop", "box")
    killed = sm.run("start", "box", expect=None, env={"SANDMAN_FAULT_AFTER": "1"})
    assert killed.code == -signal.SIGKILL, killed
    record = sm.record("box")
    assert record["tainted"] and not record["stopped"]
    sm.apply()
    sm.note_records()
    assert sm.status_of("box")["state"] == "running"
    sm.run("plan", str(sm.units), "--detailed-exitcode")


def test_the_daemon_restarts_nothing_while_a_stop_runs_nor_after_it(
    sm: Sandman, daemon: Callable[..., Daemon]
) -> None:
    """An init with restart = "always" that takes a while over SIGTERM: while `stop` waits for
    it the daemon restarts nothing, and after it the sandbox stays stopped, through passes."""
    slow = ("sh", "-c", "trap 'sleep 2; exit 0' TERM; while true; do sleep 0.1; done")
    slow_unit = unit(command=slow, sandbox='restart = "always"')
    sm.write("slow", slow_unit.replace('stop_timeout = "1s"', 'stop_timeout = "10s"'))
    sm.write("other", unit(sandbox='restart = "always"'))
    the_daemon = daemon(sm, "--drift-interval", "0")
    ready = the_daemon.wait_message("READY=1")
    init, other = sm.init("slow"), sm.init("other")

    stopping = subprocess.Popen(sm.argv("stop", "slow"), stdout=subprocess.DEVNULL)
    wait_for(lambda: stopped_record(sm, "slow"), "the record to be marked stopped")
    # A full pass asked for while the init takes its time: it waits for the stop's lock.
    the_daemon.signal(signal.SIGHUP)
    assert stopping.wait(timeout=60) == 0
    assert_stopped(sm, "slow", init)
    reloaded = the_daemon.wait_message("READY=1", after=ready + 1)
    status = [line for line in the_daemon.messages[reloaded].splitlines() if "STATUS" in line]
    assert status == ["STATUS=1 sandboxes running, 0 not running, 1 stopped"]
    assert_stopped(sm, "slow", init)
    assert "restarting" not in the_daemon.log() and "exited; restart" not in the_daemon.log()
    assert sm.status_of("slow")["restarts"] == 0
    assert sm.init("other") == other and alive(*other)

    sm.run("start", "slow")
    sm.note_records()
    assert sm.status_of("slow")["state"] == "running"
    assert sm.status_of("slow")["restarts"] == 0
    # The daemon watches the init `start` made from its record at once (no drift check runs
    # here): killed, it is restarted as its policy says.
    started = sm.init("slow")
    os.kill(started[0], signal.SIGKILL)
    wait_for(partial(test_daemon.a_new_init, sm, "slow", started), "the daemon's restart")
    sm.note_records()
    assert sm.status_of("slow")["restarts"] == 1


def assert_released(lab: Lab, name: str, init: tuple[int, int]) -> None:
    """Stopped, and nothing of its network left: no veth, no rule; a plan has nothing to do."""
    assert_stopped(lab.sm, name, init)
    assert networks.host_links(lab.veth(name)) == []
    assert [r for r in net_dump.dump_rules(lab.tag) if r.owner == name] == []
    lab.assert_no_changes()


def test_a_stop_or_start_killed_after_any_step_is_finished_by_the_next(lab: Lab) -> None:
    """SANDMAN_FAULT_AFTER at every step of a stop, then of a start, of a sandbox with a port
    forward: the next `stop` (or `apply`) finishes what was cut short, and the host is as after
    one that was not: nothing of it left (or it runs on its address, its forward serving)."""
    sm = lab.sm
    port = networks.free_port()
    sm.write("lan", network_unit(lab.subnet), kind="network")
    sm.write("web", sandbox_unit("lan", command=WEB, ports=[{"host": port, "sandbox": 80}]))
    sm.apply()
    address = lab.address("web")
    steps = {}
    for verb in ("stop", "start"):
        trace = sm.root / f"{verb}-trace"
        sm.run(verb, "web", env={"SANDMAN_FAULT_TRACE": str(trace)})
        steps[verb] = trace.read_text().splitlines()
    assert len(steps["stop"]) >= 4 and len(steps["start"]) >= 6, steps

    for number, what in enumerate(steps["stop"], start=1):
        sm.note_records()
        init = sm.init("web")
        fault = {"SANDMAN_FAULT_AFTER": str(number)}
        killed = sm.run("stop", "web", expect=None, env=fault)
        assert killed.code == -signal.SIGKILL, f"step {what!r} did not kill the stop\n{killed}"
        sm.run("stop", "web")
        assert_released(lab, "web", init)
        sm.run("start", "web")

    for number, what in enumerate(steps["start"], start=1):
        sm.run("stop", "web")
        fault = {"SANDMAN_FAULT_AFTER": str(number)}
        killed = sm.run("start", "web", expect=None, env=fault)
        assert killed.code == -signal.SIGKILL, f"step {what!r} did not kill the start\n{killed}"
        sm.note_records()
        sm.apply()
        sm.note_records()
        assert sm.status_of("web")["state"] == "running", what
        assert lab.address("web") == address, what
        assert lab.wait_web(port), what
        lab.assert_no_changes()
