"""The console of a booted sandbox (#19): /dev/console inside is a pty of the sandbox's own
devpts and the init's stdio; a keeper process outside the sandbox's cgroup holds the master,
writes the console's output to the log and serves `sandman console` to root alone; it ends with
the sandbox."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import test_sandboxes as base
from test_boot import boot_image, booted_unit
from test_sandboxes import Sandman, sm, wait_for

pytestmark = pytest.mark.root
busybox_image = base.busybox_image
__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

# An init that talks on its console: a greeting, then each line it reads answered, until halted.
TALKING_INIT = """#!/bin/sh
echo "console says hello"
trap 'echo "halting"; exit 0' 37
while true; do
  if read -r line; then echo "got: $line"; else sleep 1 & wait $!; fi
done
"""


@pytest.fixture
def talking(sm: Sandman) -> str:
    image = boot_image(sm, "talkbox")
    init = sm.image_dir / image / "sbin" / "init"
    init.unlink()
    init.write_text(TALKING_INIT)
    init.chmod(0o755)
    sm.write("os", booted_unit(image))
    sm.apply()
    wait_for(lambda: "console says hello" in (sm.log_dir / "os.log").read_text(), "the greeting")
    return "os"


def socket_path(sm: Sandman, name: str) -> Path:
    return sm.state_dir / "sandboxes" / name / "console.sock"


def keeper_pid(sm: Sandman, name: str) -> int:
    """The keeper's PID, from the credentials of its end of a connection (as root)."""
    directory = os.open(sm.state_dir / "sandboxes" / name, os.O_PATH)
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(f"/proc/self/fd/{directory}/console.sock")
            creds = client.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
    finally:
        os.close(directory)
    return int(struct.unpack("3i", creds)[0])


def console(sm: Sandman, name: str, typed: str) -> subprocess.CompletedProcess[str]:
    argv = sm.argv("console", name)
    return subprocess.run(
        argv, input=typed, capture_output=True, text=True, timeout=60, check=False
    )


def test_dev_console_is_a_pty_of_the_sandbox_and_the_init_s_stdio(
    sm: Sandman, talking: str
) -> None:
    pid = sm.running_init(talking)
    # From outside: the init's stdio is a pty slave (major 136), the same as /dev/console in
    # its root, and that pty is of the sandbox's devpts, not the host's.
    fd0 = os.stat(f"/proc/{pid}/fd/0")
    dev_console = os.stat(f"/proc/{pid}/root/dev/console")
    assert stat.S_ISCHR(fd0.st_mode) and os.major(fd0.st_rdev) == 136
    assert dev_console.st_rdev == fd0.st_rdev
    host_pts = os.stat("/dev/pts/ptmx").st_dev
    assert dev_console.st_dev != host_pts
    # From inside: the same.
    inside = sm.exec(talking, "stat", "-L", "-c", "%t:%T", "/dev/console", "/proc/1/fd/1").out
    first, second = inside.split()
    assert first == second and first.startswith("88:")  # 136 in hex


def test_console_types_into_the_init_and_shows_its_answer(sm: Sandman, talking: str) -> None:
    result = console(sm, talking, "ping\n")
    assert result.returncode == 0, result
    assert "got: ping" in result.stdout
    # The same went to the log, with plain newlines.
    wait_for(lambda: "got: ping\n" in (sm.log_dir / "os.log").read_text(), "the answer logged")
    assert "\r" not in (sm.log_dir / "os.log").read_text()


def test_the_keeper_is_outside_the_sandbox_and_serves_root_only(sm: Sandman, talking: str) -> None:
    path = socket_path(sm, talking)
    found = os.stat(path)
    assert stat.S_ISSOCK(found.st_mode) and found.st_uid == 0
    assert stat.S_IMODE(found.st_mode) == 0o600
    keeper = keeper_pid(sm, talking)
    assert keeper != os.getpid()
    sandbox_cgroups = sm.sandbox_cgroups(talking)
    keeper_cgroups = Path(f"/proc/{keeper}/cgroup").read_text()
    assert not any(os.path.basename(c) == talking for c in keeper_cgroups.split("/"))
    assert sandbox_cgroups
    # Another local user cannot connect: the attack, as `nobody`.
    attack = (
        "import socket,sys\n"
        "s=socket.socket(socket.AF_UNIX)\n"
        "try:\n s.connect(sys.argv[1])\nexcept OSError as e:\n print('refused', e.errno)\n"
        "else:\n print('connected')\n"
    )
    directory = os.open(path.parent, os.O_PATH)
    try:
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             sys.executable, "-c", attack, f"/proc/self/fd/{directory}/console.sock"],
            capture_output=True, text=True, timeout=30, pass_fds=(directory,), check=False,
        )  # fmt: skip
    finally:
        os.close(directory)
    assert "refused" in result.stdout, result


def test_a_second_client_is_told_and_destroy_ends_the_keeper(sm: Sandman, talking: str) -> None:
    keeper = keeper_pid(sm, talking)
    first = subprocess.Popen(
        sm.argv("console", talking),
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for(lambda: _clients(keeper) >= 1, "the first client attached")
        second = console(sm, talking, "")
        assert "another client is attached" in second.stdout, second
    finally:
        first.kill()
        first.wait()
    sm.destroy(talking)
    wait_for(lambda: not os.path.exists(f"/proc/{keeper}"), "the keeper to end with the sandbox")
    assert not socket_path(sm, talking).exists()


def _clients(keeper: int) -> int:
    """Sockets the keeper holds beyond its listener and channel (a connected client adds one)."""
    links = []
    for fd in os.listdir(f"/proc/{keeper}/fd"):
        with contextlib.suppress(FileNotFoundError):  # a connection closed since the listing
            links.append(os.readlink(f"/proc/{keeper}/fd/{fd}"))
    return sum(link.startswith("socket:") for link in links) - 1


def test_console_of_a_sandbox_that_does_not_boot_is_refused(sm: Sandman) -> None:
    sm.write("plain", base.unit())
    sm.apply()
    result = console(sm, "plain", "")
    assert result.returncode == 2 and "boot = true" in result.stderr, result


def test_a_killed_keeper_is_drift_repaired_by_a_recreate(sm: Sandman, talking: str) -> None:
    """The keeper's PID is in the record (checked against the socket's peer); killed, status and
    plan show the console as drift and apply makes the sandbox anew with a new keeper."""
    keeper = keeper_pid(sm, talking)
    runtime = sm.runtime(talking)
    assert runtime["keeper_pid"] == keeper and runtime["keeper_start_time"] > 0
    old = sm.init(talking)
    os.kill(keeper, signal.SIGKILL)
    wait_for(lambda: not base.alive(keeper, runtime["keeper_start_time"]), "the keeper to die")
    gone = f"console: expected kept by pid {keeper}, found no keeper"
    assert sm.status_of(talking)["drift"] == [gone]
    planned = sm.run("plan", str(sm.units)).out
    assert f"-/+ sandbox/{talking}: recreate (drift: {gone})" in planned, planned
    assert "1 recreated" in sm.apply().out
    new = sm.init(talking)
    assert new != old and base.alive(*new)
    assert keeper_pid(sm, talking) == sm.runtime(talking)["keeper_pid"] != keeper
    assert "got: again" in console(sm, talking, "again\n").stdout
    assert "No changes" in sm.apply().out


def test_a_flood_of_escapes_on_the_console_is_drained_and_stays_off_apply_s_terminal(
    sm: Sandman, talking: str
) -> None:
    """The attack from inside: 4 MB of terminal escapes written to /dev/console (far beyond a
    pty's buffer) finish, since the keeper drains the master with no client attached; the init
    still answers; the bytes go to the log, never to the output of an apply that starts a
    booted sandbox."""
    line = r"printf '\033]0;owned\007\033[2J%1000s\n' x"
    flood = f"i=0; while [ $i -lt 4096 ]; do {line}; i=$((i+1)); done"
    sm.sh(talking, f"({flood}) > /dev/console; echo flood-done > /dev/console")
    wait_for(lambda: "flood-done" in (sm.log_dir / "os.log").read_text(), "the flood logged")
    assert "got: after" in console(sm, talking, "after\n").stdout
    sm.destroy(talking)
    sm.write("os2", (sm.units / "os.sandbox.toml").read_text())
    sm.remove("os")
    started = sm.apply()
    wait_for(lambda: "console says hello" in (sm.log_dir / "os2.log").read_text(), "the greeting")
    # The greeting is printed while apply runs: its output has neither that nor escapes.
    assert "\033" not in started.out + started.err and "console says" not in started.out


def test_the_keeper_holds_the_master_of_the_sandbox_s_console(sm: Sandman, talking: str) -> None:
    """From outside: one of the keeper's fds is a ptmx of the sandbox's devpts (not the host's)
    whose pty (fdinfo's tty-index) is the one bound on /dev/console inside."""
    keeper = keeper_pid(sm, talking)
    init = sm.running_init(talking)
    console_rdev = os.stat(f"/proc/{init}/root/dev/console").st_rdev
    sandbox_devpts = os.stat(f"/proc/{init}/root/dev/pts/ptmx").st_dev
    masters = []
    for fd in os.listdir(f"/proc/{keeper}/fd"):
        try:
            info = Path(f"/proc/{keeper}/fdinfo/{fd}").read_text()
            device = os.stat(f"/proc/{keeper}/fd/{fd}").st_dev
        except FileNotFoundError:
            # keeper_pid's own connection: the keeper closes it when the probe hangs up, which
            # may be after the listing; the master lives as long as the keeper.
            continue
        index = [line.split()[1] for line in info.splitlines() if line.startswith("tty-index:")]
        if index:
            masters.append((int(index[0]), device))
    assert masters == [(os.minor(console_rdev), sandbox_devpts)], masters
    assert sandbox_devpts != os.stat("/dev/pts/ptmx").st_dev


def test_stop_ends_the_keeper_and_start_records_a_new_one(sm: Sandman, talking: str) -> None:
    keeper = keeper_pid(sm, talking)
    sm.run("stop", talking)
    wait_for(lambda: not os.path.exists(f"/proc/{keeper}"), "the keeper to end with the stop")
    assert "keeper_pid" not in sm.runtime(talking) and not socket_path(sm, talking).exists()
    sm.run("start", talking)
    again = keeper_pid(sm, talking)
    assert again != keeper and sm.runtime(talking)["keeper_pid"] == again
    assert "got: back" in console(sm, talking, "back\n").stdout
