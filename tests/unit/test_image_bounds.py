"""Tar bombs: an import is bounded in bytes and members (and by the image dir's free space)
before anything is written, and a refused import leaves nothing behind."""

from __future__ import annotations

import gzip
import io
import os
import tarfile
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from sandman.cli import build_parser, main
from sandman.errors import ImageError
from sandman.images import store, tarball

MiB = 1024**2


class _Zeros(io.RawIOBase):
    """An endless stream of zeros: tarfile reads a member's size of it."""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        buffer[:] = bytes(len(buffer))
        return len(buffer)


def _tar(path: Path, files: dict[str, int], gz: bool = False) -> str:
    """A tarball of files of zeros, NAME -> size in bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, size in files.items():
            info = tarfile.TarInfo(name)
            info.size = size
            info.mode = 0o644
            tar.addfile(info, _Zeros())
    data = buffer.getvalue()
    path.write_bytes(gzip.compress(data) if gz else data)
    return str(path)


def _nothing_left(image_dir: Path) -> bool:
    """No image and no temporary: only the image dir's lock file, which stays."""
    return set(os.listdir(image_dir)) <= {store.LOCK}


def test_the_defaults_are_a_bound_and_the_command_line_says_the_same() -> None:
    bounds = tarball.Bounds()
    assert (bounds.max_size, bounds.max_files) == (64 * 1024**3, 1_000_000)
    args = build_parser().parse_args(["image", "import", "img", "x.tar"])
    assert (args.max_size, args.max_files) == bounds


def test_files_larger_than_max_size_are_refused_and_nothing_is_left(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "big.tar", {"small": 1000, "big": 2 * MiB})
    with pytest.raises(ImageError) as refused:
        store.import_image(
            str(tmp_path / "images"), "img", archive, bounds=tarball.Bounds(max_size=MiB)
        )
    message = str(refused.value)
    assert archive in message and "1M" in message and "--max-size" in message, message
    assert "'big'" in message and "nothing imported" in message, message
    assert _nothing_left(tmp_path / "images")


def test_a_gzip_bomb_is_bounded_by_what_it_inflates_to(tmp_path: Path) -> None:
    """20M of zeros compress to some kilobytes: the bound is on what extraction writes."""
    archive = _tar(tmp_path / "bomb.tar.gz", {"zeros": 20 * MiB}, gz=True)
    assert os.path.getsize(archive) < MiB
    with pytest.raises(ImageError, match="--max-size"):
        store.import_image(
            str(tmp_path / "images"), "img", archive, bounds=tarball.Bounds(max_size=MiB)
        )
    assert _nothing_left(tmp_path / "images")


def test_too_many_members_are_refused(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "many.tar", {f"f{i}": 0 for i in range(5)})
    with pytest.raises(ImageError, match=r"more than 3 members \(the --max-files limit\)"):
        store.import_image(
            str(tmp_path / "images"), "img", archive, bounds=tarball.Bounds(max_files=3)
        )
    assert _nothing_left(tmp_path / "images")


def test_an_archive_within_the_bounds_imports(tmp_path: Path) -> None:
    archive = _tar(tmp_path / "ok.tar", {"a": MiB, "b": 10})
    bounds = tarball.Bounds(max_size=MiB + 10, max_files=2)
    image = store.import_image(str(tmp_path / "images"), "img", archive, bounds=bounds)
    assert os.path.getsize(os.path.join(image.path, "a")) == MiB


class _Room(NamedTuple):
    f_bavail: int
    f_frsize: int
    f_blocks: int
    f_favail: int
    f_files: int


def test_more_than_the_free_space_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    archive = _tar(tmp_path / "fits-not.tar", {"big": 2 * MiB})
    room = _Room(f_bavail=256, f_frsize=4096, f_blocks=10_000, f_favail=100, f_files=1000)
    monkeypatch.setattr(os, "statvfs", lambda _path: room)
    with pytest.raises(ImageError, match=r"more than the 1M free in the image dir"):
        store.import_image(str(tmp_path / "images"), "img", archive)
    assert _nothing_left(tmp_path / "images")


def test_an_oversized_extended_header_is_not_read_into_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tarball, "_HEADER_MAX", 512)
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("long/" + "n" * 2000)
        tar.addfile(info, io.BytesIO(b""))
    archive = tmp_path / "pax.tar"
    archive.write_bytes(buffer.getvalue())
    with pytest.raises(ImageError, match="an extended header of"):
        store.import_image(str(tmp_path / "images"), "img", str(archive))
    assert _nothing_left(tmp_path / "images")


def test_the_command_line_takes_max_size(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    archive = _tar(tmp_path / "big.tar", {"big": 2 * MiB})
    image_dir = str(tmp_path / "images")
    argv = ["image", "import", "img", archive, "--image-dir", image_dir, "--max-size", "1M"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "--max-size" in err and archive in err and "Traceback" not in err, err
    assert main([*argv[:-1], "3M"]) == 0
    with pytest.raises(SystemExit) as bad:
        main(["image", "import", "img", archive, "--max-size", "lots"])
    assert bad.value.code == 2
    assert "is not a size" in capsys.readouterr().err
