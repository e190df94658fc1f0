"""Booting an image's own init (`[sandbox] boot = true`, issue #19), with a stand-in for systemd:
a busybox image whose /sbin/init is a shell script. Checked from inside (what the init is
given: its environment, /run/host/container-manager, the machine id, its tmpfs) and from
outside (its PID, the record, how a stop ends it), and across a restart (the same machine id)."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest
import test_sandboxes as base
from test_sandboxes import Sandman, sm, wait_for
from test_stop import KERNEL_KEEPS_EXITS

from sandman import booting

pytestmark = pytest.mark.root

busybox_image = base.busybox_image
__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

# Answers systemd's halt request (SIGRTMIN+3, 37 with glibc) as systemd does: it ends cleanly.
# `wait` on a background sleep lets the trap run at once.
INIT = """#!/bin/sh
echo "booted as pid $$"
trap 'echo "halting on SIGRTMIN+3"; exit 0' 37
while true; do sleep 1 & wait $!; done
"""
# A stop that waits stop_timeout out takes at least this long, so a stop well inside it ended by
# the signal; half of it is the bound, since an emulated guest (tests/vm) is slow: 10 s there.
LONG_TIMEOUT = 120


def boot_image(sm: Sandman, name: str, machine_id: str | None = None) -> str:
    """The busybox image (hard-linked: files are only replaced, never written) with an init, and an
    /etc/machine-id holding `machine_id` when given."""
    root = sm.image_dir / name
    shutil.copytree(sm.image_dir / "busybox", root, symlinks=True, copy_function=os.link)
    init = root / "sbin" / "init"
    init.parent.mkdir(exist_ok=True)
    # New files, never written through what is there: busybox's own sbin/init is a link to the
    # binary, which is hard-linked to the session's image.
    init.unlink(missing_ok=True)
    init.write_text(INIT)
    init.chmod(0o755)
    if machine_id is not None:
        (root / "etc" / "machine-id").unlink(missing_ok=True)
        (root / "etc" / "machine-id").write_text(machine_id)
    return name


def booted_unit(image: str) -> str:
    return (
        f'[sandbox]\nboot = true\nstop_timeout = "{LONG_TIMEOUT}s"\n\n[rootfs]\nimage = "{image}"\n'
    )


def environ(sm: Sandman, name: str) -> dict[str, str]:
    raw = sm.exec(name, "cat", "/proc/1/environ").out
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


def mounts(sm: Sandman, name: str) -> dict[str, str]:
    """Mount point -> file system type, as the init sees them."""
    found = {}
    for line in sm.exec(name, "cat", "/proc/1/mountinfo").out.splitlines():
        fields = line.split()
        found[fields[4]] = fields[fields.index("-") + 1]
    return found


def test_a_booted_init_gets_what_nspawn_gives_and_keeps_its_machine_id(sm: Sandman) -> None:
    image = boot_image(sm, "bootbox")
    sm.write("os", booted_unit(image))
    sm.apply()
    log = sm.log_dir / "os.log"
    wait_for(lambda: "booted as pid 1" in log.read_text(), "the image's init to start")
    expected_id = booting.machine_id("os", sm.tag)

    # From outside: the image's init is the sandbox's init, PID 1 of its pid namespace.
    pid = sm.running_init("os")
    assert Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:2] == [b"/bin/sh", b"/sbin/init"]
    nspid = next(
        line
        for line in Path(f"/proc/{pid}/status").read_text().splitlines()
        if line.startswith("NSpid:")
    )
    assert nspid.split()[-1] == "1", nspid
    record = sm.record("os")
    assert record["unit"]["sandbox"]["boot"] is True
    assert record["unit"]["sandbox"]["stop_signal"] == "SIGRTMIN+3"
    assert record["unit"]["security"] == {
        **record["unit"]["security"],
        "capabilities": "os",
        "seccomp": "os",
    }
    assert record["unit"]["resolved"]["machine_id"] == expected_id

    # From inside.
    env = environ(sm, "os")
    assert env["container"] == "sandman"
    assert env["container_uuid"] == booting.uuid_text(expected_id)
    assert sm.exec("os", "cat", "/run/host/container-manager").out == "sandman\n"
    assert sm.exec("os", "cat", "/etc/machine-id").out == expected_id + "\n"
    seen = mounts(sm, "os")
    assert {target: seen.get(target) for target in ("/run", "/run/lock", "/tmp")} == dict.fromkeys(
        ("/run", "/run/lock", "/tmp"), "tmpfs"
    ), seen
    assert sm.exec("os", "stat", "-c", "%a", "/tmp").out.strip() == "1777"

    # The same machine id after a restart, with a new init.
    assert sm.run("restart", "os").code == 0
    wait_for(lambda: "booted as pid 1" in log.read_text(), "the init to start again")
    assert sm.running_init("os") != pid
    assert sm.exec("os", "cat", "/etc/machine-id").out == expected_id + "\n"
    assert environ(sm, "os")["container_uuid"] == booting.uuid_text(expected_id)

    # Stopped by its stop signal, SIGRTMIN+3, on which it ends cleanly, well inside stop_timeout.
    began = time.monotonic()
    assert sm.run("stop", "os").code == 0
    assert time.monotonic() - began < LONG_TIMEOUT / 2
    assert "halting on SIGRTMIN+3" in log.read_text()
    if KERNEL_KEEPS_EXITS:
        assert sm.status_of("os")["exit"]["code"] == 0
    sm.destroy("os")
    assert sm.gone("os") == []


def test_a_booted_sandbox_without_a_network_gets_hosts_and_the_hosts_resolv_conf(
    sm: Sandman,
) -> None:
    """As nspawn's --resolv-conf=auto: on the host's network the host's resolv.conf as it is
    (its loopback resolvers answer there); in a network namespace of its own with no network,
    the image's own file stays. /etc/hosts names the sandbox's hostname in both."""
    image = boot_image(sm, "namebox")
    (sm.image_dir / image / "etc").mkdir(exist_ok=True)
    (sm.image_dir / image / "etc/resolv.conf").write_text("# the image's own\n")
    sm.write("hostnet", booted_unit(image) + "\n[namespaces]\nnet = false\n")
    sm.write(
        "alone", booted_unit(image).replace("boot = true\n", 'boot = true\nhostname = "lonely"\n')
    )
    sm.apply()
    host_resolv = Path("/etc/resolv.conf").read_text()
    assert sm.exec("hostnet", "cat", "/etc/resolv.conf").out == host_resolv
    assert "127.0.1.1\thostnet\n" in sm.exec("hostnet", "cat", "/etc/hosts").out
    assert sm.exec("alone", "cat", "/etc/resolv.conf").out == "# the image's own\n"
    assert "127.0.1.1\tlonely\n" in sm.exec("alone", "cat", "/etc/hosts").out
    # Bound read-only: the sandbox's root cannot rewrite them for the others or the host.
    refused = sm.sh("hostnet", "echo x > /etc/resolv.conf", expect=None)
    assert refused.code != 0
    assert Path("/etc/resolv.conf").read_text() == host_resolv
    sm.destroy("hostnet", "alone")
    assert sm.gone("hostnet") == [] and sm.gone("alone") == []


def test_a_machine_id_the_image_sets_is_kept_and_an_uninitialized_one_is_set(sm: Sandman) -> None:
    kept = boot_image(sm, "withid", "0123456789abcdef0123456789abcdef\n")
    unset = boot_image(sm, "firstboot", "uninitialized\n")
    sm.write("kept", booted_unit(kept))
    sm.write("unset", booted_unit(unset))
    sm.apply()
    assert sm.exec("kept", "cat", "/etc/machine-id").out == "0123456789abcdef0123456789abcdef\n"
    assert (
        sm.exec("unset", "cat", "/etc/machine-id").out == booting.machine_id("unset", sm.tag) + "\n"
    )
    # Written in the sandbox's own layer: the image keeps what it had.
    assert (sm.image_dir / unset / "etc" / "machine-id").read_text() == "uninitialized\n"


def test_a_symlinked_machine_id_is_not_written_through(sm: Sandman) -> None:
    """The image is untrusted: its /etc/machine-id leading elsewhere is left to the init."""
    image = boot_image(sm, "linked")
    (sm.image_dir / image / "etc" / "id-elsewhere").write_text("")
    (sm.image_dir / image / "etc" / "machine-id").symlink_to("/etc/id-elsewhere")
    sm.write("linked", booted_unit(image))
    sm.apply()
    assert sm.exec("linked", "cat", "/etc/id-elsewhere").out == ""
    assert environ(sm, "linked")["container_uuid"] == booting.uuid_text(
        booting.machine_id("linked", sm.tag)
    )


def test_an_image_without_an_init_is_refused_before_anything_changes(sm: Sandman) -> None:
    root = sm.image_dir / "noinit"
    shutil.copytree(sm.image_dir / "busybox", root, symlinks=True, copy_function=os.link)
    (root / "sbin" / "init").unlink(missing_ok=True)  # busybox's own init
    sm.write("noinit", booted_unit("noinit"))
    result = sm.apply(expect=2)
    assert "noinit.sandbox.toml: sandbox.boot: the root has no init to boot" in result.err, result
    assert sm.gone("noinit") == []
