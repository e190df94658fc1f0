"""/etc/hosts and /etc/resolv.conf of sandboxes on no network: a command's image keeps its own
files (nothing bound), and a unit's own mount on one of them wins over what sandman would bind
(a booted sandbox's files: tests/root/test_boot.py; a network's: tests/root/test_networks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_sandboxes as base
from test_boot import boot_image, booted_unit
from test_sandboxes import Sandman, sm, unit, wait_for

pytestmark = pytest.mark.root
busybox_image = base.busybox_image
__all__ = ["busybox_image", "sm"]  # the fixtures, used by name


def bound_targets(sm: Sandman, name: str) -> set[str]:
    """Which of the name files are mount points of the init."""
    lines = Path(f"/proc/{sm.running_init(name)}/mountinfo").read_text().splitlines()
    return {line.split()[4] for line in lines} & {"/etc/hosts", "/etc/resolv.conf"}


@pytest.mark.parametrize("net", ["true", "false"])
def test_a_commands_image_keeps_its_own_name_files(sm: Sandman, net: str) -> None:
    sm.write("calm", unit(rest=f"[namespaces]\nnet = {net}"))
    sm.apply()
    assert bound_targets(sm, "calm") == set()
    image = sm.image_dir / "busybox/etc"
    assert sm.exec("calm", "cat", "/etc/hosts").out == (image / "hosts").read_text()
    assert sm.exec("calm", "cat", "/etc/resolv.conf").out == (image / "resolv.conf").read_text()


def test_a_units_own_mount_on_etc_hosts_wins(sm: Sandman, tmp_path: Path) -> None:
    mine = tmp_path / "hosts"
    mine.write_text("10.1.2.3\tmine\n")
    mount = f'[[mount]]\ntype = "bind"\nsource = "{mine}"\ntarget = "/etc/hosts"\nread_only = true'
    sm.write("own", booted_unit(boot_image(sm, "ownbox")) + "\n" + mount + "\n")
    sm.apply()
    wait_for(lambda: "booted as pid 1" in (sm.log_dir / "own.log").read_text(), "the init")
    assert sm.exec("own", "cat", "/etc/hosts").out == "10.1.2.3\tmine\n"
