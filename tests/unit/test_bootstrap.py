"""`sandman image bootstrap` around mmdebstrap (sandman.images.bootstrap), with a stand-in
mmdebstrap on PATH: the arguments it gets, its progress passed on, its failure an image error,
and no archive left either way. tests/root/test_debian_boot.py runs the real one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sandman.errors import ImageError
from sandman.images import bootstrap

STAND_IN = """#!/bin/sh
echo "I: $*"
for last; do :; done
[ -n "$FAIL" ] && { echo "E: no mirror"; exit 25; }
for arg; do case "$arg" in *.tar) : > "$arg";; esac; done
"""


@pytest.fixture
def mmdebstrap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    program = bin_dir / "mmdebstrap"
    program.write_text(STAND_IN)
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir


def test_mmdebstrap_gets_minbase_the_boot_packages_and_the_asked_ones(
    tmp_path: Path, mmdebstrap: Path
) -> None:
    notes: list[str] = []
    archive, remove = bootstrap.bootstrap_tar(
        "deb",
        str(tmp_path / "images/deb"),
        str(tmp_path / "images"),
        suite="trixie",
        mirror="http://mirror.invalid/debian",
        include=("nginx", "dbus"),
        report=notes.append,
    )
    assert os.path.isfile(archive) and archive.endswith("rootfs.tar")
    assert stat.S_IMODE(os.stat(os.path.dirname(archive)).st_mode) == 0o700
    said = next(n for n in notes if n.startswith("mmdebstrap: I: "))
    assert said.split()[2:] == [
        "--variant=minbase",
        "--include=systemd-sysv,dbus,nginx",
        "--format=tar",
        "trixie",
        archive,
        "http://mirror.invalid/debian",
    ]
    remove()
    assert not os.path.exists(os.path.dirname(archive))


def test_a_failed_mmdebstrap_is_an_image_error_naming_what_it_said(
    tmp_path: Path, mmdebstrap: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(ImageError, match=r"mmdebstrap exited 25: .*E: no mirror"):
        bootstrap.bootstrap_tar(
            "deb", str(tmp_path / "i/deb"), str(tmp_path / "i"), report=lambda _: None
        )
    assert [p for p in tmp_path.iterdir() if p.name.startswith(".sandman-bootstrap")] == []


def test_without_mmdebstrap_the_error_says_how_to_install_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ImageError, match="apt-get install mmdebstrap"):
        bootstrap.bootstrap_tar("deb", str(tmp_path / "i/deb"), str(tmp_path), report=print)
