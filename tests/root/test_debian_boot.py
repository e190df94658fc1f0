"""A real Debian bookworm, made with `sandman image bootstrap` (mmdebstrap), booted by its own
systemd in a sandbox with a user namespace and an explicit id map (#19): it reaches running (or
degraded, with the failed units named), journald runs, its cgroups stay below the sandbox's, a
stop is systemd's own shutdown well inside stop_timeout, a restart keeps the machine id, and
destroy leaves nothing.

The image is built once on the host from the Debian mirror and kept in the test cache
($SANDMAN_TEST_CACHE, /var/cache/sandman-test), which `tests/vm/run.py --tests` copies into the
offline guest. A booted systemd needs the delegated cgroup tree of cgroup v2: on a v1 or hybrid
host the test checks that apply says so; the boot itself is checked in the pure v2 guest."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import test_sandboxes as base
from test_sandboxes import WAIT, Sandman, sm, wait_for

from sandman import booting
from sandman.images import bootstrap
from sandman.kernel.cgroup import detect_mode

pytestmark = pytest.mark.root
busybox_image = base.busybox_image
__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

CACHE = Path(os.environ.get("SANDMAN_TEST_CACHE", "/var/cache/sandman-test"))
V2 = detect_mode("/sys/fs/cgroup") == "v2"
# Keyed by what makes it: other packages, another image.
KEY = hashlib.sha256(",".join(bootstrap.BOOT_PACKAGES).encode()).hexdigest()[:8]
IMAGE = f"debian-{bootstrap.DEFAULT_SUITE}-{KEY}"
REPO = Path(__file__).resolve().parents[2]
STOP_TIMEOUT = 10 * WAIT  # far more than systemd's shutdown takes: a stop that uses it fails


@pytest.fixture(scope="session")
def debian_tree() -> Path:
    tree = CACHE / "images" / IMAGE
    if tree.is_dir():
        return tree
    if os.environ.get("VM_BOOT"):
        pytest.fail(f"{tree} was not copied in: the host suite builds it before the guest runs")
    argv = [sys.executable, "-m", "sandman", "image", "bootstrap", "--image-dir"]
    argv += [str(CACHE / "images"), IMAGE, "debian"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{' '.join(argv)}:\n{done.stderr}"
    return tree


def booted_debian(sm: Sandman, tree: Path) -> None:
    """The shipped example unit (units/debian/), with a stop_timeout for an emulated guest."""
    shutil.copytree(tree, sm.image_dir / "debian", symlinks=True, copy_function=os.link)
    shipped = (REPO / "units/debian/os.sandbox.toml").read_text()
    assert 'stop_timeout = "30s"' in shipped
    sm.write("os", shipped.replace('"30s"', f'"{STOP_TIMEOUT:.0f}s"'))


def test_debian_boots_to_running_and_stops_by_its_own_shutdown(
    sm: Sandman, debian_tree: Path, record_property: Callable[[str, object], None]
) -> None:
    booted_debian(sm, debian_tree)
    started = time.monotonic()
    applied = sm.apply()
    if not V2:
        assert "no cgroup tree is delegated" in applied.err
        return
    state = sm.exec("os", "systemctl", "is-system-running", "--wait", expect=None).out.strip()
    booted_in = time.monotonic() - started
    failed = sm.exec("os", "systemctl", "--failed", "--no-legend", "--plain", expect=None).out
    # In the junit report: what the boot reached, which units failed, how long it took.
    record_property("state", state)
    record_property("failed_units", failed.strip() or "none")
    record_property("apply_to_running_s", f"{booted_in:.1f}")
    assert state in ("running", "degraded"), f"{state}; failed units: {failed}"
    assert sm.exec("os", "systemctl", "is-active", "systemd-journald").out == "active\n"
    machine_id = sm.exec("os", "cat", "/etc/machine-id").out.strip()
    assert machine_id == booting.machine_id("os", sm.tag)

    # From outside: systemd's tree is below the sandbox's cgroup, owned by the mapped root.
    (own,) = sm.sandbox_cgroups("os")
    pid = sm.running_init("os")
    inside = Path(f"/proc/{pid}/cgroup").read_text().strip().split("::", 1)[1]
    assert inside.startswith("/" + os.path.relpath(own, "/sys/fs/cgroup") + "/")
    assert os.stat(os.path.join(own, "init.scope")).st_uid == 2000000
    assert os.path.isdir(os.path.join(own, "system.slice"))

    # stop: SIGRTMIN+3, on which systemd shuts down by itself, long before stop_timeout.
    started = time.monotonic()
    sm.run("stop", "os")
    took = time.monotonic() - started
    record_property("stop_s", f"{took:.1f}")
    assert took < STOP_TIMEOUT / 2, f"stop took {took:.1f} s of {STOP_TIMEOUT:.0f} s"
    assert sm.sandbox_cgroups("os") == []

    sm.run("start", "os")
    again = sm.exec("os", "systemctl", "is-system-running", "--wait", expect=None).out.strip()
    assert again in ("running", "degraded")
    assert sm.exec("os", "cat", "/etc/machine-id").out.strip() == machine_id
    wait_for(lambda: sm.sandbox_cgroups("os") or None, "the restarted sandbox's cgroup")
