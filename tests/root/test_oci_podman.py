"""Podman drives sandman-oci (`--runtime`), as shared/oci/README.md describes: conmon calls
create, start, state, exec, kill, pause, resume, delete with its own options and log format.

Everything is private to the test: a containers.conf passed as CONTAINERS_CONF to every call,
podman's storage under tmp_path (--root, --runroot, --tmpdir), and the runtime behind a wrapper
script that gives it a --root of its own (podman passes none). --network none: podman's bridge
network would leave a bridge and firewall rules on the host. The teardown fails the test on a
container, state dir or mount left behind."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from oci_bundles import make_rootfs

pytestmark = pytest.mark.root

LIMIT = 180.0  # a guard against hanging, never an assertion about speed
IMAGE = "localhost/sandman-oci-bb:latest"
PURE_V2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")


@dataclass
class Podman:
    base: list[str]
    env: dict[str, str]
    state: Path
    cgroup_parent: str  # the test's own: podman puts the containers and conmon below it

    def __call__(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [*self.base, *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=LIMIT,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"podman {args} exited {done.returncode}: {done.stderr}")
        return done

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        options = (
            "--runtime",
            "sandman",
            "--network",
            "none",
            "--cgroup-parent",
            self.cgroup_parent,
        )
        return self("run", *options, *args, check=False)


def _mounts_under(path: Path) -> list[str]:
    with open("/proc/self/mountinfo", encoding="utf-8") as handle:
        return [line.split()[4] for line in handle if line.split()[4].startswith(str(path))]


def _remove_cgroups(parent: str) -> list[str]:
    """Remove the test's cgroup parent in every hierarchy (podman leaves conmon's cgroup and
    the parent); the cgroups that still hold processes."""
    busy = []
    root = Path("/sys/fs/cgroup")
    for top in [root, *root.iterdir()]:
        tree = top / parent.strip("/")
        if not tree.is_dir():
            continue
        for directory in [*sorted((d for d in tree.rglob("*") if d.is_dir()), reverse=True), tree]:
            try:
                directory.rmdir()
            except OSError:
                busy.append(str(directory))
    return busy


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    if shutil.which("podman") is None:
        pytest.fail("podman is not installed: contrib/setup.sh --test installs it")
    state = tmp_path / "oci-state"
    wrapper = tmp_path / "sandman-oci"
    runtime = Path(sys.executable).with_name("sandman-oci")
    wrapper.write_text(f'#!/bin/sh\nexec {runtime} --root {state} "$@"\n')
    wrapper.chmod(0o755)
    conf = tmp_path / "containers.conf"
    conf.write_text(
        "[containers]\n"
        'default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'runtime_supports_json = ["crun", "runc", "sandman"]\n'
        "[engine.runtimes]\n"
        f'sandman = ["{wrapper}"]\n'
    )
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    # Podman refuses a runroot path longer than 50 characters: a short private dir.
    runroot = Path(tempfile.mkdtemp(prefix="smoci-run-"))
    storage = ["--root", str(tmp_path / "root"), "--runroot", str(runroot)]
    base = ["podman", *storage, "--tmpdir", str(tmp_path / "tmp"), "--cgroup-manager", "cgroupfs"]
    client = Podman(base, env, state, f"/sandman-oci-podman-{uuid.uuid4().hex[:10]}")
    rootfs = make_rootfs(tmp_path / "bb")
    with tarfile.open(tmp_path / "bb.tar", "w") as archive:
        archive.add(rootfs, arcname=".")
    client("import", "--change", 'CMD ["/bin/sh"]', str(tmp_path / "bb.tar"), IMAGE)
    yield client
    leftovers = client("ps", "-a", "-q").stdout.split()
    client("rm", "-a", "-f", "-t", "0", check=False)
    client("rmi", "-a", "-f", check=False)
    with contextlib.suppress(subprocess.SubprocessError):
        client("system", "reset", "-f", check=False)
    mounts = _mounts_under(tmp_path) + _mounts_under(runroot)
    for mount in reversed(mounts):
        subprocess.run(["umount", "-l", mount], check=False)
    shutil.rmtree(runroot, ignore_errors=True)
    cgroups = _remove_cgroups(client.cgroup_parent)
    assert not cgroups, f"processes left in {cgroups}"
    left_state = os.listdir(state) if state.exists() else []
    assert not leftovers and not mounts and not left_state, (leftovers, mounts, left_state)


def test_podman_run_passes_the_exit_code_and_output(podman: Podman) -> None:
    done = podman.run("--rm", IMAGE, "sh", "-c", "echo out; cat /proc/1/cgroup; exit 4")
    assert done.returncode == 4, done.stderr
    assert done.stdout.splitlines()[0] == "out"
    # Its cgroup from inside: the one podman named on the hybrid host (where podman shares the
    # host's cgroup namespace); on pure v2 podman asks for a cgroup namespace, rooted there.
    inside = done.stdout.splitlines()[1]
    assert inside == "0::/" if PURE_V2 else "libpod" in inside, inside
    missing = podman.run("--rm", IMAGE, "no-such-program")
    assert missing.returncode == 127, missing.stderr


def test_podman_detached_exec_tty_pause_stop_rm(podman: Podman) -> None:
    started = podman.run("-d", "--name", "pd1", IMAGE, "sleep", "1000")
    assert started.returncode == 0, started.stderr
    container_id = started.stdout.strip()
    assert (podman.state / container_id).is_dir()  # our runtime holds it
    inspect = podman("inspect", "--format", "{{.State.Pid}} {{.State.Status}}", "pd1").stdout
    pid, status = inspect.split()
    assert status == "running"
    assert os.readlink(f"/proc/{pid}/ns/pid") != os.readlink("/proc/self/ns/pid")
    # From outside, on any host: the init is in the cgroup podman named, below its parent.
    unified = [
        line
        for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
        if line.startswith("0::")
    ]
    assert unified and unified[0].startswith(f"0::{podman.cgroup_parent}/libpod"), unified
    executed = podman("exec", "pd1", "sh", "-c", "echo in-exec; exit 2", check=False)
    assert executed.returncode == 2 and executed.stdout == "in-exec\n", executed.stderr
    with_tty = podman("exec", "-t", "pd1", "sh", "-c", "tty", check=False)
    assert with_tty.returncode == 0 and with_tty.stdout.startswith("/dev/pts/"), with_tty.stderr
    podman("pause", "pd1")
    assert podman("inspect", "--format", "{{.State.Status}}", "pd1").stdout.strip() == "paused"
    podman("unpause", "pd1")
    podman("stop", "-t", "0", "pd1")
    assert podman("inspect", "--format", "{{.State.Status}}", "pd1").stdout.strip() == "exited"
    podman("rm", "pd1")
    assert not (podman.state / container_id).exists()


def test_podman_run_with_a_terminal(podman: Podman) -> None:
    done = podman.run("--rm", "-t", IMAGE, "sh", "-c", "tty; exit 9")
    assert done.returncode == 9, done.stderr
    assert done.stdout.startswith("/dev/pts/")


def _cgroup_dir(pid: str, controller: str) -> Path:
    """The init's cgroup directory where `controller`'s files are: v2's one, or v1's hierarchy."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    if PURE_V2:
        return Path("/sys/fs/cgroup") / lines[0].split(":", 2)[2].lstrip("/")
    for line in lines:
        _, names, path = line.split(":", 2)
        if controller in names.split(","):
            return Path("/sys/fs/cgroup") / names.split(",")[0] / path.lstrip("/")
    raise AssertionError(f"no {controller} hierarchy in {lines}")


def test_podman_update_changes_the_limits_in_place(podman: Podman) -> None:
    started = podman.run("-d", "--name", "pu1", IMAGE, "sleep", "1000")
    assert started.returncode == 0, started.stderr
    pid = podman("inspect", "--format", "{{.State.Pid}}", "pu1").stdout.strip()
    limits = ("--memory", "64m", "--cpu-quota", "30000", "--cpu-period", "100000")
    updated = podman("update", *limits, "--cpuset-cpus", "0", "pu1", check=False)
    assert updated.returncode == 0, updated.stderr
    # From outside: the kernel's files of the init's cgroup.
    memory, cpu, cpuset = (_cgroup_dir(pid, c) for c in ("memory", "cpu", "cpuset"))
    if PURE_V2:
        assert (memory / "memory.max").read_text().strip() == str(64 << 20)
        assert (cpu / "cpu.max").read_text().split() == ["30000", "100000"]
    else:
        assert (memory / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        assert (cpu / "cpu.cfs_quota_us").read_text().strip() == "30000"
    assert (cpuset / "cpuset.cpus").read_text().strip() == "0"
    # From inside: the scheduler lets its processes run on CPU 0 only.
    inside = podman("exec", "pu1", "sh", "-c", "grep Cpus_allowed_list /proc/self/status").stdout
    assert inside.split() == ["Cpus_allowed_list:", "0"]
    podman("stop", "-t", "0", "pu1")
    podman("rm", "pu1")
