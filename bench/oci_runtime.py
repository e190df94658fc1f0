"""sandman-oci beside runc (and crun where it runs): `create` + `start` + `delete --force` of one
busybox container, whole processes as an engine calls them, interleaved round by round; then
`state` alone (the call engines make most) and sandman-oci's start-up (its imports); then, where
podman is installed, `podman run --rm IMAGE true` with each runtime (issue #21's podman row: its
own storage, cgroupfs, the busybox root imported as the image).

Standalone (not in bench/run's table): `sudo .venv/bin/python bench/oci_runtime.py [--runs N]`.
It prints each contender's median, min and max in ms, and sandman-oci's ratio to runc. Reports
timings only; it never fails on a time."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

APPLETS = ("sh", "sleep", "true")


def bundle(work: Path, name: str) -> Path:
    """A busybox bundle whose cgroup is NAME's own under the bench's parent."""
    root = work / f"bundle-{name}" / "rootfs"
    for directory in ("bin", "proc", "sys", "dev", "tmp"):
        (root / directory).mkdir(parents=True)
    shutil.copy("/bin/busybox", root / "bin" / "busybox")
    for applet in APPLETS:
        (root / "bin" / applet).symlink_to("busybox")
    config = {
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "process": {
            "args": ["sleep", "1000"],
            "cwd": "/",
            "env": ["PATH=/bin"],
            "user": {"uid": 0, "gid": 0},
            "capabilities": {"bounding": ["CAP_KILL"], "permitted": ["CAP_KILL"]},
        },
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs"},
        ],
        "linux": {
            "namespaces": [{"type": t} for t in ("pid", "ipc", "uts", "mount", "network")],
            "cgroupsPath": f"/sandman-oci-bench/{name}",
        },
    }
    (root.parent / "config.json").write_text(json.dumps(config))
    return root.parent


def _quiet(command: list[str]) -> None:
    """Run a runtime with stdio of its own: a container's init keeps what it is given, and this
    script's stdout may be a pipe someone reads to its end."""
    devnull = subprocess.DEVNULL
    subprocess.run(command, check=True, stdin=devnull, stdout=devnull, stderr=devnull)


def lifecycle(runtime: list[str], state_root: Path, bundle_dir: Path) -> Callable[[], float]:

    def once() -> float:
        base = [*runtime, "--root", str(state_root)]
        began = time.perf_counter()
        for args in (
            ["create", "--bundle", str(bundle_dir), "c"],
            ["start", "c"],
            ["delete", "--force", "c"],
        ):
            _quiet([*base, *args])
        return time.perf_counter() - began

    return once


def state_call(runtime: list[str], state_root: Path, bundle_dir: Path) -> Callable[[], float]:
    base = [*runtime, "--root", str(state_root)]

    def once() -> float:
        began = time.perf_counter()
        subprocess.run([*base, "state", "s"], check=True, stdout=subprocess.DEVNULL)
        return time.perf_counter() - began

    _quiet([*base, "create", "--bundle", str(bundle_dir), "s"])
    return once


def works(runtime: list[str], work: Path, bundle_dir: Path) -> bool:
    try:
        lifecycle(runtime, work / "probe", bundle_dir)()
    except subprocess.CalledProcessError:
        return False
    return True


def report(name: str, times: list[float]) -> float:
    median = statistics.median(times) * 1000
    low, high = min(times) * 1000, max(times) * 1000
    print(f"  {name:<28} median {median:7.1f} ms  min {low:7.1f}  max {high:7.1f}")
    return median


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--python", default=sys.executable)
    args = parser.parse_args()
    ours = [str(Path(args.python).with_name("sandman-oci"))]
    work = Path(tempfile.mkdtemp(prefix="sandman-oci-bench-"))
    try:
        contenders = {"sandman-oci": ours}
        for tool in ("runc", "crun"):
            path = shutil.which(tool)
            if path and works([path], work, bundle(work, f"probe-{tool}")):
                contenders[tool] = [path]
            elif path:
                print(f"{tool}: cannot run a container on this host; left out")
        bundles = {name: bundle(work, name) for name in contenders}
        cycles = {
            name: lifecycle(cmd, work / name, bundles[name]) for name, cmd in contenders.items()
        }
        times: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(args.runs):
            for name, once in cycles.items():
                times[name].append(once())
        print(f"create + start + delete --force, {args.runs} rounds:")
        medians = {name: report(name, values) for name, values in times.items()}
        states = {
            name: state_call(cmd, work / f"{name}-state", bundles[name])
            for name, cmd in contenders.items()
        }
        print(f"state of a created container, {args.runs} rounds:")
        state_medians = {
            name: report(name, [once() for _ in range(args.runs)]) for name, once in states.items()
        }
        imports = subprocess.run(
            [args.python, "-X", "importtime", "-c", "import sandman.oci.main, sandman.oci.create"],
            capture_output=True,
            text=True,
            check=True,
        ).stderr.splitlines()
        print(f"sandman-oci imports: {len(imports) - 1} modules on the create path")
        if "runc" in medians:
            lifecycle_ratio = medians["sandman-oci"] / medians["runc"]
            state_ratio = state_medians["sandman-oci"] / state_medians["runc"]
            print(f"ratio to runc: lifecycle {lifecycle_ratio:.2f}x, state {state_ratio:.2f}x")
        if shutil.which("podman") and "runc" in contenders:
            podman_rounds(Podman(work, ours[0], bundles["sandman-oci"] / "rootfs"), args.runs)
    finally:
        _clean(work, ours)
    return 0


class Podman:
    """podman with storage, run root and config of the bench's own; `sandman` names the runtime
    (with a state root under the work dir), runc is podman's own entry."""

    IMAGE = "localhost/sandman-oci-bench:latest"

    def __init__(self, work: Path, runtime: str, rootfs: Path) -> None:
        self.work = work / "podman"
        self.work.mkdir()
        wrapper = self.work / "sandman-oci"
        wrapper.write_text(f'#!/bin/sh\nexec {runtime} --root {self.work / "state"} "$@"\n')
        wrapper.chmod(0o755)
        conf = self.work / "containers.conf"
        conf.write_text(
            '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\n'
            '[engine]\ncgroup_manager = "cgroupfs"\n'
            'runtime_supports_json = ["crun", "runc", "sandman"]\n'
            f'[engine.runtimes]\nsandman = ["{wrapper}"]\n'
        )
        self.env = {**os.environ, "CONTAINERS_CONF": str(conf)}
        # podman refuses a run root longer than 50 characters
        self.runroot = Path(tempfile.mkdtemp(prefix="smoci-bench-"))
        self.base = [
            "podman", "--root", str(self.work / "root"), "--runroot", str(self.runroot),
            "--tmpdir", str(self.work / "tmp"), "--cgroup-manager", "cgroupfs",
        ]  # fmt: skip
        archive = self.work / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "-cf", str(archive), "."], check=True)
        self("import", str(archive), self.IMAGE)

    def __call__(self, *args: str) -> None:
        devnull = subprocess.DEVNULL
        command = [*self.base, *args]
        subprocess.run(command, env=self.env, check=True, stdin=devnull, stdout=devnull)

    def run_true(self, runtime: str) -> Callable[[], float]:
        parent = f"/sandman-oci-bench/podman-{runtime}"

        def once() -> float:
            began = time.perf_counter()
            self("run", "--rm", "--runtime", runtime, "--cgroup-parent", parent, self.IMAGE, "true")
            return time.perf_counter() - began

        return once

    def clean(self) -> None:
        for args in (("rm", "-a", "-f"), ("rmi", "-a", "-f"), ("system", "reset", "-f")):
            subprocess.run([*self.base, *args], env=self.env, check=False, capture_output=True)
        with open("/proc/self/mountinfo", encoding="utf-8") as handle:
            points = [line.split()[4] for line in handle]
        for point in reversed(points):
            if point.startswith((str(self.work), str(self.runroot))):
                subprocess.run(["umount", "-l", point], check=False)
        shutil.rmtree(self.runroot, ignore_errors=True)


def podman_rounds(podman: Podman, runs: int) -> None:
    try:
        trials = {name: podman.run_true(name) for name in ("sandman", "runc")}
        for once in trials.values():
            once()  # warm: the image's layers, podman's own first-run setup
        times: dict[str, list[float]] = {name: [] for name in trials}
        for _ in range(runs):
            for name, once in trials.items():
                times[name].append(once())
        print(f"podman run --rm IMAGE true, {runs} rounds:")
        medians = {name: report(f"--runtime {name}", values) for name, values in times.items()}
        print(f"ratio to runc under podman: {medians['sandman'] / medians['runc']:.2f}x")
    finally:
        podman.clean()


def _clean(work: Path, ours: list[str]) -> None:
    """Every container left (an interrupted run) deleted, the bench's cgroups removed."""
    for root in work.iterdir():
        if not root.is_dir() or root.name.startswith("bundle-"):
            continue
        for ident in os.listdir(root):
            present = [[tool] for tool in ("runc", "crun") if shutil.which(tool)]
            for runtime in (ours, *present):
                command = [*runtime, "--root", str(root), "delete", "--force", ident]
                subprocess.run(command, check=False, capture_output=True)
    for top in Path("/sys/fs/cgroup").iterdir():
        _rmdir_tree(top / "sandman-oci-bench")
    shutil.rmtree(work, ignore_errors=True)


def _rmdir_tree(path: Path) -> None:
    if path.is_dir():
        for child in sorted((p for p in path.rglob("*") if p.is_dir()), reverse=True):
            child.rmdir()
        path.rmdir()


if __name__ == "__main__":
    sys.exit(main())
