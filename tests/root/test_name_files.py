"""/etc/hosts and /etc/resolv.conf of sandboxes on no network (#19, as nspawn's
--resolv-conf=auto): the sandbox's own name resolves, the host's resolvers come in only where the
sandbox shares the host's network, the files are read-only inside, and a unit's own mount on one
of them wins. Sandboxes on a network get theirs from tests/root/test_networks.py."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_sandboxes as base
from test_sandboxes import Sandman, sm, unit

pytestmark = pytest.mark.root
busybox_image = base.busybox_image
__all__ = ["busybox_image", "sm"]  # the fixtures, used by name


def bound_targets(sm: Sandman, name: str) -> set[str]:
    """Mount points of the init that are single files sandman bound in."""
    lines = Path(f"/proc/{sm.running_init(name)}/mountinfo").read_text().splitlines()
    return {line.split()[4] for line in lines} & {"/etc/hosts", "/etc/resolv.conf"}


def mount_options(sm: Sandman, name: str, target: str) -> set[str]:
    for line in Path(f"/proc/{sm.running_init(name)}/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == target:
            return set(fields[5].split(","))
    return set()


def test_an_offline_sandbox_resolves_its_own_name_and_keeps_its_images_resolvers(
    sm: Sandman,
) -> None:
    sm.write("calm", unit(sandbox='hostname = "calm.example"'))
    sm.apply()
    hosts = sm.exec("calm", "cat", "/etc/hosts").out
    assert "127.0.0.1\tlocalhost" in hosts and "127.0.1.1\tcalm.example" in hosts
    assert bound_targets(sm, "calm") == {"/etc/hosts"}
    image_resolv = (sm.image_dir / "busybox/etc/resolv.conf").read_text()
    assert sm.exec("calm", "cat", "/etc/resolv.conf").out == image_resolv
    refused = sm.sh("calm", "echo 10.0.0.1 evil >> /etc/hosts", expect=None)
    assert refused.code != 0  # the host's root owns it, unmapped inside; and the bind is ro:
    assert "ro" in mount_options(sm, "calm", "/etc/hosts")


def test_a_sandbox_in_the_hosts_network_uses_the_hosts_resolvers(sm: Sandman) -> None:
    sm.write("near", unit(rest="[namespaces]\nnet = false"))
    sm.apply()
    assert bound_targets(sm, "near") == {"/etc/hosts", "/etc/resolv.conf"}
    assert sm.exec("near", "cat", "/etc/resolv.conf").out == Path("/etc/resolv.conf").read_text()
    hosts = sm.exec("near", "cat", "/etc/hosts").out
    assert "127.0.1.1\tnear" in hosts
    assert hosts.endswith(Path("/etc/hosts").read_text())


def test_a_units_own_mount_on_etc_hosts_wins(sm: Sandman, tmp_path: Path) -> None:
    mine = tmp_path / "hosts"
    mine.write_text("10.1.2.3\tmine\n")
    mount = f'[[mount]]\ntype = "bind"\nsource = "{mine}"\ntarget = "/etc/hosts"\nread_only = true'
    sm.write("own", unit(rest=mount))
    sm.apply()
    assert sm.exec("own", "cat", "/etc/hosts").out == "10.1.2.3\tmine\n"
