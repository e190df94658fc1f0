"""Container images made and saved by podman imported by `sandman image import`: the same tree as
`umoci unpack` of the same image (names, modes, owners, link targets, contents), and a sandbox
on it sees the second layer's whiteouts. podman runs on a private storage root and runroot, with
no network, as the shared OCI notes say; umoci and skopeo are only the reference here. Its
storage driver is overlay: its layer diffs write a directory removed and made anew as an opaque
directory (`.wh..wh..opq`), where vfs writes a whiteout of each old file instead."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import test_sandboxes as base
from test_sandboxes import Sandman, sm, unit, wait_for

pytestmark = pytest.mark.root
busybox_image = base.busybox_image
__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

TOOLS = ("podman", "skopeo", "umoci", "runc")
# podman's defaults fail on this kind of host without CAP_SYS_RESOURCE (its nofile ulimit).
# runc runs the build's one RUN step: Debian's podman takes crun where it is installed, and crun
# refuses a hybrid host whose cgroup2 offers any controller (here hugetlb, bound to no v1 tree).
CONTAINERS_CONF = """[containers]
default_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]
[engine]
cgroup_manager = "cgroupfs"
runtime = "runc"
"""
# The second layer: a whiteout (/etc/motd), a directory removed and made anew (/opt/old: an
# opaque directory in the layer), a new file, and the config a sandbox runs.
CONTAINERFILE = """FROM localhost/sandman-test-base:latest
RUN rm /etc/motd && rm -rf /opt/old && mkdir /opt/old && echo new > /opt/old/g && echo hi > /hello
ENV GREETING=hello
WORKDIR /opt
CMD ["/bin/sh", "-c", "echo $GREETING from $(pwd)"]
"""


class Podman:
    def __init__(self, top: Path) -> None:
        self.top = top
        (top / "containers.conf").write_text(CONTAINERS_CONF)
        self.env = {**os.environ, "CONTAINERS_CONF": str(top / "containers.conf")}
        # podman refuses a runroot path of more than 50 characters: pytest's are longer.
        self.runroot = tempfile.mkdtemp(prefix="sandman-podman-")

    def __call__(self, *args: str) -> str:
        argv = [
            "podman",
            "--root",
            str(self.top / "root"),
            "--runroot",
            self.runroot,
            "--storage-driver",
            "overlay",
            *args,
        ]
        done = subprocess.run(argv, capture_output=True, text=True, env=self.env, check=False)
        assert done.returncode == 0, f"{' '.join(argv)}: {done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def saved(
    tmp_path_factory: pytest.TempPathFactory, busybox_image: Path
) -> Iterator[dict[str, Path]]:
    """The two-layer image saved as an OCI archive and as a docker archive, built once for the
    module (the tests only read the archives)."""
    tmp_path = tmp_path_factory.mktemp("podman")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"missing {', '.join(missing)}: apt-get install {' '.join(missing)}")
    podman = Podman(tmp_path)
    try:
        rootfs = tmp_path / "base"
        shutil.copytree(busybox_image, rootfs, symlinks=True)
        (rootfs / "etc/motd").write_text("goes in layer 2\n")
        (rootfs / "opt/old").mkdir(parents=True)
        (rootfs / "opt/old/f").write_text("goes in layer 2\n")
        (rootfs / "opt/keep").mkdir()
        with tarfile.open(tmp_path / "base.tar", "w") as tar:
            tar.add(rootfs, arcname=".")
        podman(
            "import",
            "--change",
            'CMD ["/bin/sh"]',
            str(tmp_path / "base.tar"),
            "localhost/sandman-test-base",
        )
        (tmp_path / "Containerfile").write_text(CONTAINERFILE)
        podman(
            "build",
            "--pull=never",
            "--network=none",
            "-t",
            "localhost/sandman-test-two",
            str(tmp_path),
        )
        archives = {"oci": tmp_path / "two-oci.tar", "docker": tmp_path / "two-docker.tar"}
        for form, path in archives.items():
            podman(
                "save", "--format", f"{form}-archive", "-o", str(path), "localhost/sandman-test-two"
            )
        yield archives
    finally:
        # Also after a failed build: podman's overlay driver bind-mounts its store onto itself.
        podman("system", "reset", "--force")
        if os.path.isdir(podman.runroot):  # podman system reset removes it, at times
            shutil.rmtree(podman.runroot)


def top_layer_names(archive: Path) -> list[str]:
    """The member names of the last layer of the OCI archive ARCHIVE."""
    with tarfile.open(archive) as outer:

        def blob(digest: str) -> bytes:
            member = outer.extractfile(f"blobs/sha256/{digest.split(':')[1]}")
            assert member is not None
            return member.read()

        index = json.loads(outer.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest = json.loads(blob(index["manifests"][0]["digest"]))
        assert len(manifest["layers"]) == 2
        top = blob(manifest["layers"][-1]["digest"])
    with tarfile.open(fileobj=io.BytesIO(top)) as layer:
        return [os.path.normpath(name) for name in layer.getnames()]


def test_the_saved_image_has_a_whiteout_and_an_opaque_directory(saved: dict[str, Path]) -> None:
    names = top_layer_names(saved["oci"])
    assert "etc/.wh.motd" in names and "opt/old/.wh..wh..opq" in names
    assert "opt/old/.wh.f" not in names


def unpacked_by_umoci(archive: Path, top: Path) -> Path:
    layout = top / "layout"
    subprocess.run(
        ["skopeo", "copy", "-q", f"oci-archive:{archive}", f"oci:{layout}:two"], check=True
    )
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:two", str(top / "bundle")],
        check=True,
        capture_output=True,
    )
    return top / "bundle/rootfs"


def tree(top: Path) -> dict[str, tuple[int, int, int, bytes | str | None]]:
    found: dict[str, tuple[int, int, int, bytes | str | None]] = {}
    for directory, dirs, files in os.walk(top):
        for name in dirs + files:
            path = os.path.join(directory, name)
            info = os.lstat(path)
            content: bytes | str | None = None
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                content = Path(path).read_bytes()
            found[os.path.relpath(path, top)] = (info.st_mode, info.st_uid, info.st_gid, content)
    return found


def imported(images: Path, archive: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "sandman", "image", "import", "--image-dir", str(images)]
    done = subprocess.run(
        [*argv, "--json", "two", str(archive)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.parametrize("form", ["oci", "docker"])
def test_a_podman_saved_image_imports_to_the_tree_umoci_unpacks(
    tmp_path: Path, saved: dict[str, Path], form: str
) -> None:
    done = imported(tmp_path / "images", saved[form])
    image = json.loads(done.stdout)["image"]
    assert "applied 2 layer(s)" in done.stderr
    ours, reference = tree(tmp_path / "images/two"), tree(unpacked_by_umoci(saved["oci"], tmp_path))
    assert ours == reference
    assert "etc/motd" not in ours and "opt/old/f" not in ours
    assert ours["opt/old/g"][3] == b"new\n" and ours["hello"][3] == b"hi\n"
    config = image["config"]
    assert config["cmd"] == ["/bin/sh", "-c", "echo $GREETING from $(pwd)"]
    assert "GREETING=hello" in config["env"] and config["workdir"] == "/opt"


def test_a_sandbox_on_an_imported_image_sees_its_layers(
    sm: Sandman, saved: dict[str, Path]
) -> None:
    imported(sm.image_dir, saved["oci"])
    sm.write("two", unit(rest='[rootfs]\nimage = "two"'))
    sm.apply()
    inside = sm.sh("two", "cat /hello /opt/old/g; ls /opt/old; test -e /etc/motd || echo no motd")
    assert inside.out.split() == ["hi", "new", "g", "no", "motd"]
    pid = sm.running_init("two")
    root = Path(f"/proc/{pid}/root")
    assert (root / "hello").read_text() == "hi\n" and not (root / "etc/motd").exists()


def test_a_sandbox_without_a_command_runs_what_the_image_says(
    sm: Sandman, saved: dict[str, Path]
) -> None:
    imported(sm.image_dir, saved["oci"])
    text = '[sandbox]\nstop_timeout = "1s"\nenvironment = { EXTRA = "mine" }\n'
    sm.write("two", text + '\n[rootfs]\nimage = "two"\n')
    validated = sm.run("validate", str(sm.units))
    given = "sandbox.command, sandbox.environment, sandbox.working_directory"
    assert f"sandbox/two: {given} from its image's config" in validated.out
    planned = sm.run("plan", str(sm.units)).out
    assert '    sandbox.command = ["/bin/sh","-c","echo $GREETING from $(pwd)"]' in planned
    assert f"    image two's config gives = {given}" in planned
    sm.apply()

    def logged_line() -> str | None:
        out = sm.run("logs", "two").out
        return out if "from" in out else None

    logged = wait_for(logged_line, "the image's Cmd in the log")
    assert logged.strip().splitlines()[-1] == "hello from /opt"
    environment = sm.record("two")["unit"]["sandbox"]["environment"]
    assert environment["GREETING"] == "hello" and environment["EXTRA"] == "mine"
