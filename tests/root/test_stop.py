"""Stopping an init that takes its signals through a signalfd, as systemd does: it blocks them and
has no handler, so a SigCgt check alone took it for one that ignores SIGTERM and killed it
outright. It must get its stop signal (SIGTERM, or the unit's `stop_signal`) and the time to act
on it, and the record must tell an init that ended so from one the cgroup's kill took (issue
#19's stopping)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import test_sandboxes as base
from test_sandboxes import Sandman, sm, unit, wait_for

from sandman.observe import procs

pytestmark = pytest.mark.root

busybox_image = base.busybox_image
# Kernels before 6.15 give no exit status to a pidfd's holder: there how a stop ended is unknown.
KERNEL_KEEPS_EXITS = tuple(int(x) for x in os.uname().release.split(".")[:2]) >= (6, 15)
__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

SIGNALFD_INIT_C = r"""
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/signalfd.h>
#include <unistd.h>
int main(int argc, char **argv) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, argc > 1 ? atoi(argv[1]) : SIGTERM);
    sigprocmask(SIG_BLOCK, &set, NULL);
    int fd = signalfd(-1, &set, 0);
    printf("waiting\n");
    fflush(stdout);
    struct signalfd_siginfo info;
    if (read(fd, &info, sizeof info) == sizeof info)
        printf("got signal %u, shutting down\n", info.ssi_signo);
    fflush(stdout);
    return 0;
}
"""


@pytest.fixture(scope="module")
def signalfd_init(tmp_path_factory: pytest.TempPathFactory) -> Path:
    compiler = shutil.which("gcc")
    assert compiler, "gcc is needed to build the probe; `sh contrib/setup.sh --test`"
    directory = tmp_path_factory.mktemp("stop-probe")
    directory.chmod(0o755)
    (directory / "init.c").write_text(SIGNALFD_INIT_C)
    binary = str(directory / "init")
    subprocess.run([compiler, "-static", "-O1", "-o", binary, f"{binary}.c"], check=True)
    return directory


def test_an_init_reading_signals_through_a_signalfd_gets_sigterm(
    sm: Sandman, signalfd_init: Path
) -> None:
    sm.write(
        "booted",
        unit(
            command=("/opt/probe/init",),
            rest=f"""
                [[mount]]
                type = "bind"
                source = "{signalfd_init}"
                target = "/opt/probe"
                read_only = true
            """,
        ),
    )
    sm.apply()
    log = sm.log_dir / "booted.log"
    wait_for(lambda: "waiting" in log.read_text(), "the init to block SIGTERM")
    sm.destroy("booted")
    assert "got signal 15, shutting down" in log.read_text()
    assert sm.gone("booted") == []


# A stop that waits stop_timeout out takes at least this long, so a stop well inside it ended by
# the signal; half of it is the bound, since an emulated guest (tests/vm) is slow: 10 s there.
LONG_TIMEOUT = 120


def probe_unit(init_dir: Path, *args: str, sandbox: str = "") -> str:
    lines = "\n".join(line.strip() for line in sandbox.strip().splitlines())
    return f"""
[sandbox]
command = {list(("/opt/probe/init", *args))!r}
stop_timeout = "{LONG_TIMEOUT}s"
{lines}

[[mount]]
type = "bind"
source = "{init_dir}"
target = "/opt/probe"
read_only = true
""".replace("'", '"')


def test_a_stop_signal_reaches_a_signalfd_init_which_ends_by_it(
    sm: Sandman, signalfd_init: Path
) -> None:
    """systemd's halt request, SIGRTMIN+3, read from a signalfd: the init ends on it at once,
    well before stop_timeout, and the record says it exited (code 0), not that a kill took it."""
    rtmin3 = int(signal.SIGRTMIN) + 3
    sm.write(
        "halting", probe_unit(signalfd_init, str(rtmin3), sandbox='stop_signal = "SIGRTMIN+3"')
    )
    sm.apply()
    log = sm.log_dir / "halting.log"
    wait_for(lambda: "waiting" in log.read_text(), "the init to block SIGRTMIN+3")
    pid = sm.running_init("halting")
    began = time.monotonic()
    result = sm.run("stop", "halting")
    took = time.monotonic() - began
    assert result.code == 0, result
    assert took < LONG_TIMEOUT / 2, f"the stop took {took:.1f} s"
    assert f"got signal {rtmin3}, shutting down" in log.read_text()
    assert procs.start_time(pid) is None  # gone, or a zombie the host's init has yet to reap
    status = sm.status_of("halting")
    assert status["state"] == "stopped"
    if KERNEL_KEEPS_EXITS:
        assert status["exit"]["code"] == 0, status
        assert sm.runtime("halting")["stop_status"] == 0
        rows = sm.run("status").out
        assert "stopped (code 0)" in rows, rows
        assert "its init exited with code 0" in sm.run("show", "halting").out
    sm.destroy("halting")
    assert sm.gone("halting") == []


def test_an_init_the_signal_does_not_reach_is_killed_at_once(
    sm: Sandman, signalfd_init: Path
) -> None:
    """The init blocks SIGTERM, not the SIGINT the unit stops it with: the kernel drops SIGINT
    at sending (a pid namespace's PID 1 without a handler), so the stop does not wait out
    stop_timeout; the cgroup's kill ends it, and the record says so."""
    sm.write("deaf", probe_unit(signalfd_init, sandbox='stop_signal = "SIGINT"'))
    sm.apply()
    log = sm.log_dir / "deaf.log"
    wait_for(lambda: "waiting" in log.read_text(), "the init to block SIGTERM")
    began = time.monotonic()
    result = sm.run("stop", "deaf")
    took = time.monotonic() - began
    assert result.code == 0, result
    assert took < LONG_TIMEOUT / 2, f"the stop took {took:.1f} s"
    assert "got signal" not in log.read_text()
    if KERNEL_KEEPS_EXITS:
        assert sm.status_of("deaf")["exit"]["signal"] == "SIGKILL"
    sm.destroy("deaf")
    assert sm.gone("deaf") == []
