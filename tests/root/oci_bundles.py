"""Bundles and a runner for the sandman-oci root tests: a busybox-static root file system, a
config.json written here (not by sandman, not by runc: the tests do not check sandman against
itself), every container's cgroup under a prefix of its own test, a private --root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "echo", "sleep", "cat", "ls", "id", "true", "false", "readlink", "stat", "tty")
DEFAULT_CAPS = ["CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_KILL", "CAP_SETGID", "CAP_SETUID"]


def make_rootfs(path: Path) -> Path:
    for directory in ("bin", "proc", "sys", "dev", "tmp", "etc"):
        (path / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy(BUSYBOX, path / "bin" / "busybox")
    for applet in APPLETS:
        (path / "bin" / applet).symlink_to("busybox")
    return path


def config(args: list[str], cgroup: str, **process: Any) -> dict[str, Any]:
    return {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "ocitest",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": args,
            "env": ["PATH=/bin", "OCI_TEST=1"],
            "cwd": "/",
            "capabilities": {"bounding": DEFAULT_CAPS, "permitted": DEFAULT_CAPS},
            "noNewPrivileges": True,
            **process,
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "cgroupsPath": cgroup,
            "maskedPaths": ["/proc/kcore"],
            "readonlyPaths": ["/proc/sys"],
        },
    }


@dataclass
class Runtime:
    """sandman-oci with a private state dir; every container's cgroup under `cgroup_prefix`."""

    root: Path
    rootfs: Path
    work: Path
    cgroup_prefix: str
    ids: list[str]

    def __call__(
        self, *args: str, check: bool = True, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        """Run the runtime. Its output goes to files, never pipes: `create` passes its stdio to
        the container's init, which would hold a pipe open long after the runtime exits."""
        command = [sys.executable, "-m", "sandman.oci", "--root", str(self.root), *args]
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            kwargs.setdefault("stdout", out)
            kwargs.setdefault("stderr", err)
            done = subprocess.run(command, text=True, timeout=120, check=False, **kwargs)
            out.seek(0)
            err.seek(0)
            result = subprocess.CompletedProcess(command, done.returncode, out.read(), err.read())
        if check and result.returncode != 0:
            raise AssertionError(f"{args} exited {result.returncode}: {result.stderr}")
        return result

    def bundle(self, container_id: str, args: list[str], **process: Any) -> Path:
        """A bundle whose rootfs is a hard-linked copy of the session's busybox root."""
        path = self.work / container_id
        path.mkdir()
        shutil.copytree(self.rootfs, path / "rootfs", symlinks=True, copy_function=os.link)
        data = config(args, f"{self.cgroup_prefix}/{container_id}", **process)
        (path / "config.json").write_text(json.dumps(data))
        self.ids.append(container_id)
        return path

    def state(self, container_id: str) -> dict[str, Any]:
        return dict(json.loads(self("state", container_id).stdout))
