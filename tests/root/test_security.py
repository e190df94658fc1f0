"""Escape attempts that must fail: each test fails if its defence is removed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from test_sandboxes import Sandman, busybox_image, sm, unit

__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

KEYCTL_C = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    long r = syscall(SYS_keyctl, 0 /* KEYCTL_GET_KEYRING_ID */, -3 /* session */, 0);
    if (r < 0) { printf("keyctl: %s\n", strerror(errno)); return 1; }
    printf("keyctl: ok\n");
    return 0;
}
"""


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static probe that calls keyctl(2): the busybox image has no applet that does."""
    compiler = shutil.which("gcc")
    assert compiler, "gcc is needed to build the seccomp probe; `sh contrib/setup.sh --test`"
    directory = tmp_path_factory.mktemp("probes")
    directory.chmod(0o755)  # the sandbox's root is not the host's root: it needs the x bit
    (directory / "keyctl.c").write_text(KEYCTL_C)
    subprocess.run(
        [compiler, "-static", "-O1", "-o", str(directory / "keyctl"), str(directory / "keyctl.c")],
        check=True,
    )
    return directory


def _probe_unit(probes: Path, seccomp: str) -> str:
    return unit(
        rest=f"""
            [[mount]]
            type = "bind"
            source = "{probes}"
            target = "/opt/probes"
            read_only = true
            [security]
            seccomp = "{seccomp}"
        """
    )


@pytest.mark.root
def test_default_seccomp_denies_keyctl_and_unconfined_allows_it(sm: Sandman, probes: Path) -> None:
    sm.write("confined", _probe_unit(probes, "default"))
    sm.write("unconfined", _probe_unit(probes, "unconfined"))
    sm.apply()
    denied = sm.exec("confined", "/opt/probes/keyctl", expect=1)
    assert denied.out.strip() == "keyctl: Operation not permitted", denied
    allowed = sm.exec("unconfined", "/opt/probes/keyctl")
    assert allowed.out.strip() == "keyctl: ok", allowed


@pytest.mark.root
def test_the_init_runs_under_the_filter(sm: Sandman, probes: Path) -> None:
    sm.write("confined", _probe_unit(probes, "default"))
    sm.write("unconfined", _probe_unit(probes, "unconfined"))
    sm.apply()
    confined = sm.exec("confined", "grep", "^Seccomp:", "/proc/1/status")
    assert confined.out.split() == ["Seccomp:", "2"], confined
    unconfined = sm.exec("unconfined", "grep", "^Seccomp:", "/proc/1/status")
    assert unconfined.out.split() == ["Seccomp:", "0"], unconfined


@pytest.mark.root
def test_only_the_minimal_devices_can_be_made_or_used(sm: Sandman) -> None:
    """Real root inside (no user namespace) keeps CAP_MKNOD in the default set: the devices
    cgroup (v1) lets it make a node for an allowed device (null) and refuses /dev/mem's."""
    sm.write("mknod", unit(rest="[namespaces]\nuser = false\n"))
    sm.apply()
    status = sm.exec("mknod", "grep", "^CapEff:", "/proc/self/status").out.split()[1]
    assert int(status, 16) >> 27 & 1, "CAP_MKNOD (27) should be kept by the default set"
    allowed = sm.exec(
        "mknod", "sh", "-c", "mknod /tmp/null c 1 3 && echo hi > /tmp/null && echo ok"
    )
    assert allowed.out.strip() == "ok", allowed
    refused = sm.exec("mknod", "mknod", "/tmp/mem", "c", "1", "1", expect=1)
    assert "Operation not permitted" in refused.err, refused
