"""/sys/fs/cgroup inside a sandbox: on cgroup v2, the sandbox's own cgroup (its cgroup namespace
makes it the root), read-only for a sandbox that runs a command, delegated and writable for a
booted init (#19: systemd makes its own tree there), never the host's; on a v1 or hybrid host,
nothing for a sandbox that runs a command, and for a booted init what nspawn gives there: a
tmpfs holding name=systemd (and unified), delegated. It runs on the hybrid host and in the pure
v2 guest (tests/vm/guest-tests.txt), each checking what its kind of host gives."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import test_sandboxes as base
from test_boot import boot_image, booted_unit
from test_sandboxes import Sandman, sm, unit, wait_for

from sandman.kernel.cgroup import detect_mode

pytestmark = pytest.mark.root
busybox_image = base.busybox_image
__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

V2 = detect_mode("/sys/fs/cgroup") == "v2"
# An init that does what systemd does first with a delegated tree: a child cgroup of its own,
# itself moved there, a controller enabled for it; then it waits for systemd's halt request.
MOVING_INIT = """#!/bin/sh
mkdir /sys/fs/cgroup/init.scope && echo 1 > /sys/fs/cgroup/init.scope/cgroup.procs \
  && echo "moved to $(cat /proc/1/cgroup)"
echo "+pids" > /sys/fs/cgroup/cgroup.subtree_control && echo "enabled pids"
trap 'exit 0' 37
while true; do sleep 1 & wait $!; done
"""


# The same on a v1 or hybrid host, in systemd's own hierarchy (and unified's, where there is one).
MOVING_INIT_V1 = """#!/bin/sh
for tree in /sys/fs/cgroup/systemd /sys/fs/cgroup/unified; do
  [ -d $tree ] || continue
  mkdir $tree/init.scope && echo 1 > $tree/init.scope/cgroup.procs && echo "moved in $tree"
done
touch /sys/fs/cgroup/mine 2>/dev/null || echo "the tmpfs is read-only"
echo "done: $(cat /proc/1/cgroup | tr '\\n' ' ')"
trap 'exit 0' 37
while true; do sleep 1 & wait $!; done
"""


def check_v1_delegation(sm: Sandman, log: Path) -> None:
    """v1 and hybrid: a read-only tmpfs at /sys/fs/cgroup with name=systemd (and unified) in it,
    each rooted at the sandbox's cgroup and writable by its root; the controllers stay root's."""
    wait_for(lambda: "done:" in log.read_text(), "the init to make its own cgroup")
    text = log.read_text()
    assert "moved in /sys/fs/cgroup/systemd" in text and "the tmpfs is read-only" in text
    assert ":name=systemd:/init.scope " in text
    pid = sm.running_init("os")
    mounts = {
        line.split()[4]: line.split()
        for line in Path(f"/proc/{pid}/mountinfo").read_text().splitlines()
    }
    assert mounts["/sys/fs/cgroup"][mounts["/sys/fs/cgroup"].index("-") + 1] == "tmpfs"
    systemd = mounts["/sys/fs/cgroup/systemd"]
    own = [d for d in sm.sandbox_cgroups("os") if "/systemd/" in d]
    assert len(own) == 1
    # From outside: rooted (field 4) at the sandbox's cgroup, the init in the child it made.
    assert systemd[3] == "/" + os.path.relpath(own[0], "/sys/fs/cgroup/systemd")
    root_uid = int(Path(f"/proc/{pid}/uid_map").read_text().split()[1])
    assert os.stat(os.path.join(own[0], "init.scope")).st_uid == root_uid
    if os.path.isdir("/sys/fs/cgroup/unified"):
        assert "moved in /sys/fs/cgroup/unified" in text and " 0::/init.scope" in text
    memory = [d for d in sm.sandbox_cgroups("os") if "/memory/" in d]
    assert all(os.stat(d).st_uid == 0 for d in memory)
    sm.destroy("os")
    assert sm.sandbox_cgroups("os") == []


def cgroup_mount(sm: Sandman, name: str) -> list[str] | None:
    """The init's mountinfo line at /sys/fs/cgroup, split: the last, the one it sees (below it,
    the host's bound /sys may hold the host's own); None when nothing is mounted there."""
    found = None
    for line in Path(f"/proc/{sm.running_init(name)}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == "/sys/fs/cgroup":
            found = fields
    return found


def test_a_sandbox_sees_its_own_cgroup_read_only(sm: Sandman) -> None:
    sm.write("web", unit(rest="[resources]\npids_max = 77"))
    sm.apply()
    mounted = cgroup_mount(sm, "web")
    if not V2:
        assert mounted is None
        return
    assert mounted is not None
    # From outside: cgroup2, read-only, rooted (field 4) at the sandbox's own cgroup.
    assert mounted[mounted.index("-") + 1] == "cgroup2"
    assert "ro" in mounted[5].split(",")
    (own,) = sm.sandbox_cgroups("web")
    assert mounted[3] == "/" + os.path.relpath(own, "/sys/fs/cgroup")
    # From inside: its own limit at the root of the tree, which it cannot change.
    assert sm.exec("web", "cat", "/proc/self/cgroup").out == "0::/\n"
    assert sm.exec("web", "cat", "/sys/fs/cgroup/pids.max").out == "77\n"
    refused = sm.sh("web", "mkdir /sys/fs/cgroup/mine", expect=None)
    assert refused.code != 0 and "Read-only file system" in refused.err
    assert not os.path.exists(os.path.join(own, "mine"))


@pytest.mark.parametrize("user", [True, False], ids=["userns", "host-root"])
def test_a_sandbox_on_the_host_network_sees_its_own_cgroup_too(sm: Sandman, user: bool) -> None:
    # Without a network namespace the host's /sys is bound in, its cgroup2 mount with it; the
    # kernel refuses cgroup2 mounted on a cgroup2 mount's root (EBUSY), which once failed this
    # sandbox's start on every pure v2 host.
    table = f"[namespaces]\nnet = false\nuser = {str(user).lower()}\ncgroup = true\n"
    sm.write("hostnet", unit(rest=table))
    sm.apply()
    assert sm.exec("hostnet", "cat", "/proc/self/cgroup").out.splitlines()[-1].endswith(":/")
    mounted = cgroup_mount(sm, "hostnet")
    if not V2:
        return  # the host's /sys as it is, cgroup v1 tmpfs included (read-only)
    assert mounted is not None
    assert mounted[mounted.index("-") + 1] == "cgroup2"
    assert "ro" in mounted[5].split(",")
    (own,) = sm.sandbox_cgroups("hostnet")
    assert mounted[3] == "/" + os.path.relpath(own, "/sys/fs/cgroup")
    # From inside: the sandbox's own cgroup files, none of the host's tree beside it.
    listed = set(sm.exec("hostnet", "ls", "/sys/fs/cgroup").out.split())
    assert listed == set(os.listdir(own))


def test_a_booted_init_gets_its_cgroup_delegated_and_destroy_takes_what_it_made(
    sm: Sandman,
) -> None:
    image = boot_image(sm, "movebox")
    (sm.image_dir / image / "sbin/init").write_text(MOVING_INIT)
    sm.write("os", booted_unit(image))
    if not V2:
        (sm.image_dir / image / "sbin/init").write_text(MOVING_INIT_V1)
    sm.apply()
    log = sm.log_dir / "os.log"
    if not V2:
        check_v1_delegation(sm, log)
        return
    wait_for(lambda: "enabled pids" in log.read_text(), "the init to make its own cgroup")
    assert "moved to 0::/init.scope" in log.read_text()
    mounted = cgroup_mount(sm, "os")
    assert mounted is not None and "rw" in mounted[5].split(",")
    # From outside: the init is in the child it made below the sandbox's cgroup, which the
    # sandbox's root owns, its limits staying the host root's.
    (own,) = sm.sandbox_cgroups("os")
    pid = sm.running_init("os")
    assert Path(f"/proc/{pid}/cgroup").read_text().strip().endswith("/os/init.scope")
    root_uid = int(Path(f"/proc/{pid}/uid_map").read_text().split()[1])
    assert os.stat(os.path.join(own, "init.scope")).st_uid == root_uid
    assert os.stat(os.path.join(own, "cgroup.procs")).st_uid == root_uid
    assert os.stat(os.path.join(own, "pids.max")).st_uid == 0
    assert "pids" in Path(own, "cgroup.subtree_control").read_text().split()
    # v2 lets no process join a cgroup that enables controllers for its children: exec goes
    # to a leaf of sandman's own beside the init's tree.
    assert sm.exec("os", "cat", "/proc/self/cgroup").out == "0::/sandman.exec\n"
    sm.destroy("os")
    assert sm.sandbox_cgroups("os") == []
