"""A real Debian bookworm, made with `sandman image bootstrap` (mmdebstrap), booted by its own
systemd in a sandbox with a user namespace and an explicit id map (#19): it reaches running (or
degraded, with the failed units named), journald runs, its cgroups stay below the sandbox's, a
stop is systemd's own shutdown well inside stop_timeout, a restart keeps the machine id, and
destroy leaves nothing.

The image is built once on the host from the Debian mirror and kept in the test cache
($SANDMAN_TEST_CACHE, /var/cache/sandman-test), which `tests/vm/run.py --tests` copies into the
offline guest. It runs on this hybrid host (systemd in its legacy/hybrid mode, on the name=systemd
and unified hierarchies delegated to it) and in the pure v2 guest."""

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
from test_sandboxes import WAIT, Sandman, cgroup_mounts, sm, wait_for

from sandman import booting
from sandman.images import bootstrap
from sandman.kernel.cgroup_v1 import V1_CONTROLLERS

pytestmark = pytest.mark.root
busybox_image = base.busybox_image
__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

CACHE = Path(os.environ.get("SANDMAN_TEST_CACHE", "/var/cache/sandman-test"))
# Keyed by what makes it: other packages, another image.
KEY = hashlib.sha256(",".join(bootstrap.BOOT_PACKAGES).encode()).hexdigest()[:8]
IMAGE = f"debian-{bootstrap.DEFAULT_SUITE}-{KEY}"
REPO = Path(__file__).resolve().parents[2]
# The hierarchies sandman puts a sandbox in: every cgroup2 (the "" controller), v1's own
USED = {*V1_CONTROLLERS, "name=systemd"}
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


def system_state(sm: Sandman) -> str:
    """`systemctl is-system-running --wait`, asked again while, right after the init's exec,
    systemd has made neither /run/systemd/system ("offline") nor its private socket ("Failed to
    connect to bus")."""

    def answer() -> str | None:
        done = sm.exec("os", "systemctl", "is-system-running", "--wait", expect=None)
        early = done.out.strip() == "offline" or "Failed to connect to bus" in done.err
        return None if early else done.out.strip() or "(none)"

    return wait_for(answer, "systemd's bus", timeout=10 * WAIT)


def test_debian_boots_to_running_and_stops_by_its_own_shutdown(
    sm: Sandman, debian_tree: Path, record_property: Callable[[str, object], None]
) -> None:
    booted_debian(sm, debian_tree)
    started = time.monotonic()
    sm.apply()
    state = system_state(sm)
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

    # From outside: in every hierarchy the init is below the sandbox's cgroup (v2; on v1 and
    # hybrid hosts the controllers', name=systemd's and unified's), never the host's root, and
    # systemd's own tree is there, owned by the mapped root.
    own = sm.sandbox_cgroups("os")
    rel = "/" + os.path.relpath(own[0], next(m for m in cgroup_mounts() if own[0].startswith(m)))
    pid = sm.running_init("os")
    lines = Path(f"/proc/{pid}/cgroup").read_text().split()
    record_property("init_cgroups", " ".join(lines))
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers and set(controllers.split(",")).isdisjoint(USED):
            continue  # cpuset: sandman places no sandbox there (the host's cpus and mems)
        assert (path + "/").startswith(rel + "/"), line
    trees = [d for d in own if os.path.isdir(os.path.join(d, "init.scope"))]
    assert trees, f"no init.scope below {own}"
    for tree in trees:
        assert os.stat(os.path.join(tree, "init.scope")).st_uid == 2000000
        assert os.path.isdir(os.path.join(tree, "system.slice"))

    # Its console (#19): systemd's boot messages in the log, and a getty's login prompt on
    # /dev/console, reached with `sandman console`.
    log = (sm.log_dir / "os.log").read_text()
    assert "Reached target" in log or "Welcome to" in log, log[-2000:]
    console = subprocess.run(
        sm.argv("console", "os"), input="\n", capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip
    record_property("console", console.stdout[-300:])
    assert console.returncode == 0 and "login:" in console.stdout, console

    # stop: SIGRTMIN+3, on which systemd shuts down by itself, long before stop_timeout.
    started = time.monotonic()
    sm.run("stop", "os")
    took = time.monotonic() - started
    record_property("stop_s", f"{took:.1f}")
    assert took < STOP_TIMEOUT / 2, f"stop took {took:.1f} s of {STOP_TIMEOUT:.0f} s"
    assert sm.sandbox_cgroups("os") == []

    sm.run("start", "os")
    again = system_state(sm)
    assert again in ("running", "degraded")
    assert sm.exec("os", "cat", "/etc/machine-id").out.strip() == machine_id
    wait_for(lambda: sm.sandbox_cgroups("os") or None, "the restarted sandbox's cgroup")
