"""Escape attempts that must fail: each test fails if its defence is removed."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from test_sandboxes import Sandman, busybox_image, probe_unit, sm, unit

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


EUID_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("uid=%d euid=%d\n", (int)getuid(), (int)geteuid()); return 0; }
"""


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A static probe that calls keyctl(2): the busybox image has no applet that does."""
    compiler = shutil.which("gcc")
    assert compiler, "gcc is needed to build the seccomp probe; `sh contrib/setup.sh --test`"
    directory = tmp_path_factory.mktemp("probes")
    directory.chmod(0o755)  # the sandbox's root is not the host's root: it needs the x bit
    for name, source in (("keyctl", KEYCTL_C), ("euid", EUID_C)):
        (directory / f"{name}.c").write_text(source)
        binary = str(directory / name)
        subprocess.run([compiler, "-static", "-O1", "-o", binary, f"{binary}.c"], check=True)
    # Owned by the host's root and setuid: what a setuid-root binary in an image looks like.
    (directory / "euid").chmod(0o4755)
    return directory


@pytest.mark.root
def test_default_seccomp_denies_keyctl_and_unconfined_allows_it(sm: Sandman, probes: Path) -> None:
    sm.write("confined", probe_unit(probes, seccomp="default"))
    sm.write("unconfined", probe_unit(probes, seccomp="unconfined"))
    sm.apply()
    denied = sm.exec("confined", "/opt/probes/keyctl", expect=1)
    assert denied.out.strip() == "keyctl: Operation not permitted", denied
    allowed = sm.exec("unconfined", "/opt/probes/keyctl")
    assert allowed.out.strip() == "keyctl: ok", allowed


@pytest.mark.root
def test_the_init_runs_under_the_filter(sm: Sandman, probes: Path) -> None:
    sm.write("confined", probe_unit(probes, seccomp="default"))
    sm.write("unconfined", probe_unit(probes, seccomp="unconfined"))
    sm.apply()
    confined = sm.exec("confined", "grep", "^Seccomp:", "/proc/1/status")
    assert confined.out.split() == ["Seccomp:", "2"], confined
    unconfined = sm.exec("unconfined", "grep", "^Seccomp:", "/proc/1/status")
    assert unconfined.out.split() == ["Seccomp:", "0"], unconfined


@pytest.mark.root
def test_only_the_minimal_devices_can_be_made_or_used(sm: Sandman) -> None:
    """Real root inside (no user namespace) keeps CAP_MKNOD in the default set: the devices
    cgroup (v1) or the eBPF device program (v2) lets it make a node for an allowed device (null)
    and refuses /dev/mem's and a disk's (issue #16: b 254:0, the host's root disk)."""
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
    disk = sm.exec("mknod", "mknod", "/tmp/disk", "b", "254", "0", expect=1)
    assert "Operation not permitted" in disk.err, disk


@pytest.mark.root
def test_host_processes_and_kernel_files_stay_out_of_reach(sm: Sandman) -> None:
    sm.write("box", unit())
    sm.apply()
    listed = sm.exec("box", "ls", "/proc").out.split()
    assert sorted(p for p in listed if p.isdigit()) != [], listed
    assert all(int(p) < 100 for p in listed if p.isdigit()), listed  # only the sandbox's PIDs
    for name in ("keys", "timer_list", "kcore", "sysrq-trigger", "sched_debug"):
        if Path(f"/proc/{name}").exists():
            inside = sm.exec("box", "cat", f"/proc/{name}", expect=None)
            assert inside.out == "", (name, inside)
    denied = sm.exec("box", "sh", "-c", "echo evil > /proc/sys/kernel/hostname", expect=1)
    assert "Read-only file system" in denied.err, denied
    sysfs = sm.exec("box", "sh", "-c", "echo 1 > /sys/kernel/profiling", expect=1)
    assert "Read-only file system" in sysfs.err, sysfs
    for directory in ("/sys/firmware", "/proc/acpi", "/proc/scsi"):
        if Path(directory).is_dir() and any(Path(directory).iterdir()):
            hidden = sm.exec("box", "ls", "-A", directory)
            assert hidden.out == "", (directory, hidden)


@pytest.mark.root
def test_mount_and_link_changes_are_refused_without_the_capability(sm: Sandman) -> None:
    sm.write("box", unit())
    sm.apply()
    mounted = sm.exec("box", "mount", "-t", "tmpfs", "none", "/tmp", expect=None)
    assert mounted.code != 0 and "denied" in mounted.err.lower(), mounted
    link = sm.exec("box", "ip", "link", "add", "evil0", "type", "veth", expect=None)
    assert link.code != 0 and "not permitted" in link.err, link


@pytest.mark.root
def test_the_init_holds_only_stdio(sm: Sandman) -> None:
    sm.write("box", unit())
    sm.apply()
    fds = sm.exec("box", "ls", "/proc/1/fd").out.split()
    assert fds == ["0", "1", "2"], fds


def _suid_unit(probes: Path, no_new_privileges: bool) -> str:
    return probe_unit(
        probes,
        sandbox='user = "1000:1000"',
        rest="[namespaces]\nuser = false\n",
        no_new_privileges=no_new_privileges,
    )


@pytest.mark.root
def test_a_setuid_binary_gains_nothing_under_no_new_privileges(sm: Sandman, probes: Path) -> None:
    sm.write("nnp", _suid_unit(probes, True))
    sm.write("privs", _suid_unit(probes, False))
    sm.apply()
    confined = sm.exec("nnp", "/opt/probes/euid")
    assert confined.out.strip() == "uid=1000 euid=1000", confined
    raised = sm.exec("privs", "/opt/probes/euid")
    assert raised.out.strip() == "uid=1000 euid=0", raised


@pytest.mark.root
def test_a_symlink_in_the_image_does_not_lead_a_mount_out_of_the_root(
    sm: Sandman, busybox_image: Path, tmp_path: Path
) -> None:
    """An image whose /www is a symlink to /etc, with a bind mount declared at /www: the mount
    lands on the sandbox's own /etc, and the host's /etc is untouched."""
    image = tmp_path / "evil-image"
    shutil.copytree(busybox_image, image, symlinks=True)
    (image / "www").symlink_to("/etc")
    content = tmp_path / "content"
    content.mkdir(mode=0o755)
    marker = f"sandman-escape-probe-{sm.tag}"
    (content / marker).write_text("inside\n")
    (content / marker).chmod(0o644)
    sm.write(
        "evil",
        unit(
            rest=f"""
        [rootfs]
        path = "{image}"
        [[mount]]
        type = "bind"
        source = "{content}"
        target = "/www"
        read_only = true
    """
        ),
    )
    sm.apply()
    assert not Path("/etc", marker).exists()
    inside = sm.exec("evil", "cat", f"/etc/{marker}")
    assert inside.out == "inside\n", inside
    assert (image / "etc").is_dir() and not (image / "etc" / marker).exists()


@pytest.mark.root
def test_loopback_is_up_in_a_sandbox_without_a_network(sm: Sandman) -> None:
    sm.write("box", unit())
    sm.apply()
    flags = sm.exec("box", "cat", "/sys/class/net/lo/flags").out.strip()
    assert int(flags, 16) & 0x1, flags  # IFF_UP
    pinged = sm.exec("box", "ping", "-c", "1", "-W", "2", "127.0.0.1")
    assert "1 packets received" in pinged.out, pinged
