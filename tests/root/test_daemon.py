"""`sandman daemon` against the real kernel, as root, run as systemd would run it: a subprocess
with $NOTIFY_SOCKET naming a datagram socket the test binds, its stderr kept in a file.

Each test has the private instance of test_sandboxes.py's `sm` fixture (the boot test the `lab`
of test_networks.py, for its links and rules); the `daemon` fixture stops every daemon it started
(SIGTERM, then SIGKILL) before `sm` destroys what is left and checks that nothing leaked.

No assertion is about time; the waits are guards against hanging, nothing more.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import pytest
from test_networks import Lab, host_links, lab, network_unit, sandbox_unit
from test_sandboxes import WAIT, Sandman, alive, busybox_image, sm, unit, wait_for

__all__ = ["busybox_image", "lab", "sm"]  # the fixtures, used by name

pytestmark = pytest.mark.root

# journald's form: a priority prefix, then one event.
LOG_LINE = re.compile(r"<[0-7]>\S.*")


class Daemon:
    """One `sandman daemon` process of an instance, and what it told systemd."""

    def __init__(self, sm: Sandman, notify_path: Path, options: tuple[str, ...]) -> None:
        self.sm = sm
        self.notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.notify.bind(str(notify_path))
        self.notify.setblocking(False)
        self.messages: list[str] = []
        self.log_path = notify_path.with_suffix(".log")
        argv = sm.argv("daemon", *options, str(sm.units))
        env = {k: v for k, v in os.environ.items() if not k.startswith("SANDMAN_")}
        env["NOTIFY_SOCKET"] = str(notify_path)
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=log, env=env
            )

    # -- what it said

    def received(self) -> list[str]:
        with contextlib.suppress(BlockingIOError):
            while True:
                self.messages.append(self.notify.recv(4096).decode())
        return self.messages

    def wait_message(self, field: str, after: int = 0) -> int:
        """Wait for a notification holding the line `field`; returns its index."""

        def find() -> int | None:
            for index, text in enumerate(self.received()[after:], start=after):
                if field in text.splitlines():
                    return index + 1  # never 0, which wait_for would take for "not yet"
            self._check_running()
            return None

        return wait_for(find, f"{field} from the daemon\n{self.log()}") - 1

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, pattern: str, after: int = 0) -> str:
        """Wait for a log line (after the first `after` lines) matching `pattern`."""

        def find() -> str | None:
            for line in self.log().splitlines()[after:]:
                if re.search(pattern, line):
                    return line
            self._check_running()
            return None

        return wait_for(find, f"a log line matching {pattern!r}\n{self.log()}")

    def log_lines(self) -> int:
        return len(self.log().splitlines())

    def _check_running(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(f"the daemon exited with {self.process.returncode}\n{self.log()}")

    # -- ending it

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def stop(self) -> int:
        """SIGTERM, and its exit code once it has ended."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self.sm.note_records()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=WAIT)
        self.notify.close()


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(sm: Sandman, *options: str) -> Daemon:
        the_daemon = Daemon(sm, tmp_path / f"notify-{len(started)}", options)
        started.append(the_daemon)
        return the_daemon

    try:
        yield start
    finally:
        for the_daemon in started:
            with contextlib.suppress(subprocess.TimeoutExpired):
                the_daemon.stop()
            the_daemon.kill()
            the_daemon.sm.note_records()


def inits_running(sm: Sandman, *names: str) -> bool:
    for name in names:
        try:
            pid, start = sm.init(name)
        except (OSError, ValueError, KeyError):
            return False
        if not alive(pid, start):
            return False
    return True


def a_new_init(sm: Sandman, name: str, old: tuple[int, int]) -> bool:
    return inits_running(sm, name) and sm.init(name) != old


def records(sm: Sandman) -> dict[str, tuple[str, int, int]]:
    """Every sandbox record: its digest and its init."""
    found = {}
    for path in sorted(sm.state_dir.glob("sandboxes/*.json")):
        data = json.loads(path.read_text())
        found[path.stem] = (data["digest"], data["runtime"]["pid"], data["runtime"]["start_time"])
    return found


# ---------------------------------------------------------------------------------------------
# Start, ready, stop


def test_ready_comes_after_the_declared_sandboxes_run_and_sigterm_keeps_them(
    sm: Sandman, daemon: Callable[..., Daemon]
) -> None:
    sm.write("a", unit())
    sm.write("b", unit(sandbox='restart = "always"'))
    the_daemon = daemon(sm)
    ready = the_daemon.wait_message("READY=1")
    # Read right as READY=1 came: the sandboxes are up by then, not some time after.
    assert inits_running(sm, "a", "b"), the_daemon.log()
    assert "STATUS=2 sandboxes running, 0 not running" in the_daemon.messages[ready].splitlines()
    kept = records(sm)

    assert the_daemon.stop() == 0
    assert "STOPPING=1" in "\n".join(the_daemon.received()).splitlines()
    # --on-stop keep (the default): the sandboxes run on, their records as they were.
    assert records(sm) == kept and inits_running(sm, "a", "b")
    plan = sm.run("plan", str(sm.units), "--detailed-exitcode", expect=None)
    assert plan.code == 0, str(plan)
    for line in the_daemon.log().splitlines():
        assert LOG_LINE.fullmatch(line), f"not a journald line: {line!r}"
    assert re.search(r"^<6>.*sandbox/a: create", the_daemon.log(), re.MULTILINE)


def test_sigterm_with_on_stop_stop_destroys_every_object(
    sm: Sandman, daemon: Callable[..., Daemon]
) -> None:
    sm.write("services", "[slice]\npids_max = 64\n", kind="slice")
    sm.write("a", unit(sandbox='slice = "services"'))
    sm.write("b", unit())
    the_daemon = daemon(sm, "--on-stop", "stop")
    the_daemon.wait_message("READY=1")
    sm.note_records()
    assert inits_running(sm, "a", "b")

    assert the_daemon.stop() == 0
    assert sm.leftovers() == []
    assert not (sm.state_dir / "daemon" / "restarts.json").exists()
    assert sm.status()["sandboxes"] == []


def test_a_second_daemon_on_the_same_state_dir_is_refused(
    sm: Sandman, daemon: Callable[..., Daemon]
) -> None:
    sm.write("a", unit())
    first = daemon(sm)
    first.wait_message("READY=1")
    second = daemon(sm)
    assert second.process.wait(timeout=60) == 1
    assert "another sandman daemon" in second.log()
    assert first.process.poll() is None


def test_a_manual_apply_says_that_a_daemon_manages_the_state_dir(
    sm: Sandman, daemon: Callable[..., Daemon]
) -> None:
    sm.write("a", unit())
    assert "daemon manages" not in sm.apply().err
    the_daemon = daemon(sm)
    the_daemon.wait_message("READY=1")
    result = sm.apply()
    assert f"a sandman daemon manages `{sm.state_dir}`" in result.err, result


# ---------------------------------------------------------------------------------------------
# Unit files change under it


def test_an_edited_unit_is_applied_without_restarting_the_daemon(
    sm: Sandman, daemon: Callable[..., Daemon]
) -> None:
    sm.write("a", unit())
    the_daemon = daemon(sm)
    the_daemon.wait_message("READY=1")
    old_pid, _ = sm.init("a")

    sm.write("a", unit(command=("sleep", "2000")))
    sm.write("b", unit())
    wait_for(
        lambda: (
            sm.record("a")["unit"]["sandbox"]["command"] == ["sleep", "2000"]
            and inits_running(sm, "a", "b")
        ),
        "the edit and the new unit to be applied",
    )
    assert sm.init("a")[0] != old_pid
    sm.remove("b")
    wait_for(lambda: not sm.record_path("b").exists(), "the removed unit to be pruned")
    wait_for(lambda: not sm.gone("b"), "sandbox b to be gone")
    assert the_daemon.process.poll() is None
    assert len([m for m in the_daemon.received() if "READY=1" in m.splitlines()]) == 1


def test_sighup_reloads_the_units(sm: Sandman, daemon: Callable[..., Daemon]) -> None:
    """With a debounce far longer than the test, only the reload can apply the edit."""
    sm.write("a", unit())
    the_daemon = daemon(sm, "--debounce", "3600000", "--drift-interval", "0")
    ready = the_daemon.wait_message("READY=1")
    sm.write("a", unit(command=("sleep", "2000")))
    the_daemon.signal(signal.SIGHUP)
    reloading = the_daemon.wait_message("RELOADING=1", after=ready + 1)
    assert any(
        line.startswith("MONOTONIC_USEC=") for line in the_daemon.messages[reloading].split()
    )
    the_daemon.wait_message("READY=1", after=reloading + 1)
    assert sm.record("a")["unit"]["sandbox"]["command"] == ["sleep", "2000"]
    assert inits_running(sm, "a")


def test_a_bad_unit_is_logged_with_file_and_key_and_changes_nothing(
    sm: Sandman, daemon: Callable[..., Daemon]
) -> None:
    sm.write("a", unit(sandbox='restart = "always"'))
    the_daemon = daemon(sm)
    the_daemon.wait_message("READY=1")
    before = records(sm)
    good_command = sm.record("a")["unit"]["sandbox"]["command"]

    bad = sm.write("bad", unit(sandbox='restart = "sometimes"'))
    sm.write("a", unit(command=("sleep", "2000"), sandbox='restart = "always"'))
    line = the_daemon.wait_log(r"^<3>.*bad\.sandbox\.toml")
    assert str(bad) in line and "sandbox.restart" in line
    the_daemon.wait_log(r"^<4>.*nothing of it is applied")
    assert records(sm) == before and inits_running(sm, "a")
    assert not sm.record_path("bad").exists()

    # Meanwhile an init that dies is restarted from the last good units, as before.
    killed = sm.init("a")
    os.kill(killed[0], signal.SIGKILL)
    wait_for(lambda: a_new_init(sm, "a", killed), "a new init of a")
    assert sm.record("a")["unit"]["sandbox"]["command"] == good_command

    # Fixed: the edit that waited behind the bad file is applied.
    bad.unlink()
    wait_for(
        lambda: sm.record("a")["unit"]["sandbox"]["command"] == ["sleep", "2000"],
        "the good edit to be applied once the bad file is gone",
    )
    the_daemon.wait_log(r"^<5>.*valid again")
    assert inits_running(sm, "a") and the_daemon.process.poll() is None


# ---------------------------------------------------------------------------------------------
# Inits that exit


def test_a_killed_init_is_restarted_as_its_policy_says_and_counted(
    sm: Sandman, daemon: Callable[..., Daemon]
) -> None:
    sm.write("always", unit(sandbox='restart = "always"'))
    sm.write("never", unit(sandbox='restart = "no"'))
    the_daemon = daemon(sm)
    the_daemon.wait_message("READY=1")
    for round_ in (1, 2):
        killed = sm.init("always")
        os.kill(killed[0], signal.SIGKILL)
        wait_for(partial(a_new_init, sm, "always", killed), f"restart {round_} of `always`")
        sm.note_records()
        assert sm.status_of("always")["restarts"] == round_
        # Forked from the daemon, which holds inotify, pidfds, netlink and the lock (#22).
        restarted = sm.init("always")[0]
        assert sorted(os.listdir(f"/proc/{restarted}/fd")) == ["0", "1", "2"], restarted
    the_daemon.wait_log(r"^<4>sandbox/always: init \(pid \d+\) exited")

    pid, start = sm.init("never")
    os.kill(pid, signal.SIGKILL)
    the_daemon.wait_log(r"^<4>sandbox/never: init \(pid \d+\) exited; restart = 'no'")
    assert sm.init("never") == (pid, start) and not alive(pid, start)
    never = sm.status_of("never")
    assert (never["state"], never["restarts"]) == ("exited", 0)
    assert "RESTARTS" in sm.run("status").out
    assert the_daemon.process.poll() is None


# ---------------------------------------------------------------------------------------------
# Boot


def test_a_simulated_boot_brings_every_sandbox_back_with_its_persistent_data(
    lab: Lab, daemon: Callable[..., Daemon]
) -> None:
    """A reboot empties /run and takes every process, cgroup, link and rule with it; the
    daemon's first apply makes them all again from the unit files, and a persistent upper
    layer keeps what was written into the sandbox."""
    sm = lab.sm
    sm.write("lan", network_unit(lab.subnet, nat=True), kind="network")
    sm.write("services", "[slice]\npids_max = 128\n", kind="slice")
    attach = '[network]\nattach = "lan"\naddress = "auto"\n'
    persistent = '[rootfs]\nimage = "busybox"\npersistent = true\n'
    sm.write("keeper", unit(sandbox='slice = "services"', rest=persistent + attach))
    sm.write("plain", sandbox_unit("lan"))
    first = daemon(sm)
    first.wait_message("READY=1")
    sm.sh("keeper", "echo kept > /root/data")
    sm.sh("plain", "echo lost > /root/data")
    addresses = {name: lab.address(name) for name in ("keeper", "plain")}
    assert first.stop() == 0

    # The reboot: no process, cgroup, link, rule or state of the instance survives it.
    sm.note_records()
    lab.scrub()
    for entry in sm.state_dir.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    assert lab.leftovers() == [] and list(sm.state_dir.iterdir()) == []

    second = daemon(sm)
    ready = second.wait_message("READY=1")
    assert "STATUS=2 sandboxes running, 0 not running" in second.messages[ready].splitlines()
    assert inits_running(sm, "keeper", "plain")
    assert host_links(lab.bridge("lan")) == [lab.bridge("lan")]
    assert {name: lab.address(name) for name in addresses} == addresses
    assert sm.sh("keeper", "cat /root/data").out == "kept\n"
    assert sm.sh("plain", "cat /root/data 2>&1 || true").out != "lost\n"
    assert f"PING plain ({addresses['plain'].ip})" in lab.ping("keeper", "plain").out
