"""`sandman images` and `sandman image busybox|import|remove`: help, text, JSON, exit codes."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from sandman.cli import main
from sandman.images import store

BUSYBOX = "/bin/busybox"


def tiny_tarball(path: Path, *names: str) -> str:
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 3
            tar.addfile(info, io.BytesIO(b"hi\n"))
    return str(path)


@pytest.mark.parametrize(
    "verb", [["images"], ["image"], ["image", "busybox"], ["image", "import"], ["image", "remove"]]
)
def test_help(verb: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*verb, "--help"])
    assert exit_info.value.code == 0
    assert f"usage: sandman {' '.join(verb)}" in capsys.readouterr().out


def test_image_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["image"])
    assert exit_info.value.code == 2


def test_import_list_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    image_dir = str(tmp_path / "images")
    source = tiny_tarball(tmp_path / "t.tar.gz", "etc/motd")
    assert main(["images", "--image-dir", image_dir, "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"images": []}
    assert main(["images", "--image-dir", image_dir]) == 0
    assert "No images in" in capsys.readouterr().out

    assert main(["image", "import", "tiny", source, "--image-dir", image_dir, "--json"]) == 0
    captured = capsys.readouterr()
    image = json.loads(captured.out)["image"]
    assert image["name"] == "tiny" and image["path"] == os.path.join(image_dir, "tiny")
    assert image["files"] == 1 and image["size"] > 0
    assert "sandman: extracting" in captured.err

    assert main(["images", "--image-dir", image_dir, "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)["images"]
    assert [sorted(entry) for entry in listed] == [
        ["config", "created", "files", "name", "path", "size"]
    ]
    assert listed[0]["config"] is None  # a rootfs tarball says nothing of what runs on it
    assert main(["images", "--image-dir", image_dir]) == 0
    header, row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "SIZE", "FILES", "CREATED"]
    assert row.split()[0] == "tiny" and row.split()[2] == "1"

    assert main(["image", "remove", "tiny", "--image-dir", image_dir]) == 0
    assert capsys.readouterr().out == f"tiny: removed from {image_dir}\n"
    main(["image", "import", "tiny", source, "--image-dir", image_dir])
    capsys.readouterr()
    assert main(["image", "remove", "tiny", "--image-dir", image_dir, "--json"]) == 0
    removed = {"name": "tiny", "path": os.path.join(image_dir, "tiny")}
    assert json.loads(capsys.readouterr().out) == {"removed": removed}
    assert main(["image", "remove", "tiny", "--image-dir", image_dir, "--json"]) == 1
    error = json.loads(capsys.readouterr().out)["error"]
    assert error["kind"] == "ImageError" and "no such image" in error["message"]


def test_image_dir_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SANDMAN_IMAGE_DIR", str(tmp_path))
    assert main(["image", "import", "tiny", tiny_tarball(tmp_path / "t.tgz", "f")]) == 0
    assert capsys.readouterr().out.startswith(f"tiny: imported {tmp_path}/tiny (")


def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tiny_tarball(tmp_path / "t.tgz", "f")
    image_dir = ["--image-dir", str(tmp_path / "images")]
    assert main(["image", "import", "Bad/Name", source, *image_dir]) == 2
    assert "is not an image name" in capsys.readouterr().err
    assert main(["image", "import", "ok", str(tmp_path / "missing.tar"), *image_dir]) == 2
    assert "no such tarball or directory" in capsys.readouterr().err
    assert main(["image", "busybox", "--name=-x", *image_dir]) == 2
    assert not (tmp_path / "images").exists()


def test_unsafe_archive_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tiny_tarball(tmp_path / "evil.tgz", "ok", "../evil")
    image_dir = str(tmp_path / "images")
    assert main(["image", "import", "evil", source, "--image-dir", image_dir]) == 1
    err = capsys.readouterr().err
    assert "member '../evil'" in err and source in err and "Traceback" not in err
    assert os.listdir(image_dir) == [store.LOCK]


def test_busybox_missing_is_explained(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--busybox", str(tmp_path / "none"), "--image-dir", str(tmp_path)]
    assert main(["image", "busybox", *args]) == 1
    assert "apt-get install busybox-static" in capsys.readouterr().err


@pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs Debian's busybox-static")
def test_busybox_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["image", "busybox", "--image-dir", str(tmp_path), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["image"]["path"] == str(tmp_path / "busybox")
    assert "sandman: building image busybox" in captured.err


def test_images_path_stays_light(tmp_path: Path) -> None:
    code = (
        "import sys; from sandman.cli import main; main(['images', '--image-dir', sys.argv[1]]);"
        "heavy = ('pydantic', 'pyroute2', 'sandman.kernel', 'sandman.units.model', 'tarfile');"
        "print('IMPORTED:' + ','.join(m for m in sys.modules if m in heavy))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, check=True
    )
    assert result.stdout.splitlines()[-1] == "IMPORTED:"
