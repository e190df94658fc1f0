"""Stopping an init that takes its signals through a signalfd, as systemd does: it blocks them and
has no handler, so a SigCgt check alone took it for one that ignores SIGTERM and killed it
outright. It must get SIGTERM and the time to act on it (issue #19's stopping)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import test_sandboxes as base
from test_sandboxes import Sandman, sm, unit, wait_for

pytestmark = pytest.mark.root

busybox_image = base.busybox_image
__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

SIGNALFD_INIT_C = r"""
#include <signal.h>
#include <stdio.h>
#include <sys/signalfd.h>
#include <unistd.h>
int main(void) {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
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
