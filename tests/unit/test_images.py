"""The image store without root: names, tarball safety, directory copies, atomic swaps, sizes.

Every image dir is under tmp_path. Tarballs are made in memory member by member, so a test can
write what `tarfile.add` never would (absolute names, `..`, links out of the tree).
"""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import stat
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from sandman.errors import ImageError
from sandman.images import store

Member = tuple[tarfile.TarInfo, bytes | None]


def member(
    name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", mode: int = 0o644, link: str = ""
) -> Member:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = mode
    info.linkname = link
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    return info, (data if kind == tarfile.REGTYPE else None)


def tarball(path: Path, members: list[Member], compression: str = "") -> str:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    compressors: dict[str, Callable[[bytes], bytes]] = {
        "gz": gzip.compress,
        "xz": lzma.compress,
        "bz2": bz2.compress,
    }
    compress = compressors.get(compression)
    path.write_bytes(compress(buffer.getvalue()) if compress else buffer.getvalue())
    return str(path)


TREE = [
    member("./", tarfile.DIRTYPE, mode=0o755),
    member("./bin/", tarfile.DIRTYPE, mode=0o755),
    member("./bin/tool", data=b"#!/bin/sh\n", mode=0o4755),
    member("./bin/sh", tarfile.SYMTYPE, link="/bin/tool"),
    member("./bin/again", tarfile.LNKTYPE, link="./bin/tool", mode=0o4755),
    member("./tmp/", tarfile.DIRTYPE, mode=0o1777),
    member("./etc/", tarfile.DIRTYPE, mode=0o755),
    member("./etc/secret", data=b"s3cret\n", mode=0o640),
    member("./run/pipe", tarfile.FIFOTYPE, mode=0o600),
]


def contents(image_dir: Path) -> list[str]:
    """What the image dir holds but the writers' lock file, which stays (as the state dir's)."""
    return sorted(name for name in os.listdir(image_dir) if name != store.LOCK)


def leftovers(image_dir: Path) -> list[str]:
    """Hidden entries but the writers' lock file, which stays (as the state dir's does)."""
    hidden = (p.name for p in image_dir.iterdir() if p.name.startswith("."))
    return sorted(name for name in hidden if name != store.LOCK)


def test_name_rule_is_the_unit_models() -> None:
    from sandman.units import scalars

    assert scalars.IMAGE_RE.pattern == store.NAME_PATTERN
    assert store.name_problem("x" * 64) is None
    assert store.name_problem("x" * 65) is not None


@pytest.mark.parametrize(
    "name", ["", "Busybox", "-x", ".hidden", "a/b", "..", "x" * 65, "busybox\n", "a b"]
)
def test_bad_names_are_refused(tmp_path: Path, name: str) -> None:
    source = tarball(tmp_path / "t.tar", TREE)
    image_dir = tmp_path / "images"
    with pytest.raises(ImageError, match="is not an image name"):
        store.import_image(str(image_dir), name, source)
    with pytest.raises(ImageError, match="is not an image name"):
        store.remove_image(str(image_dir), name)
    assert not image_dir.exists()


@pytest.mark.parametrize("compression", ["", "gz", "xz", "bz2"])
def test_tarball_imports_with_modes_and_links(tmp_path: Path, compression: str) -> None:
    source = tarball(tmp_path / "rootfs.tar", TREE, compression)
    notes: list[str] = []
    info = store.import_image(str(tmp_path), "alpine", source, progress=notes.append)
    root = tmp_path / "alpine"
    assert info.path == str(root) and info.name == "alpine"
    assert (root / "bin/tool").read_bytes() == b"#!/bin/sh\n"
    assert stat.S_IMODE((root / "bin/tool").stat().st_mode) == 0o4755
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((root / "etc/secret").stat().st_mode) == 0o640
    assert os.readlink(root / "bin/sh") == "/bin/tool"
    assert (root / "bin/again").stat().st_ino == (root / "bin/tool").stat().st_ino
    assert stat.S_ISFIFO((root / "run/pipe").lstat().st_mode)
    assert stat.S_IMODE(root.stat().st_mode) == 0o755
    assert any("extracted 9 entries" in note for note in notes)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (member("../evil", data=b"x"), "`..`"),
        (member("a/../../evil", data=b"x"), "`..`"),
        (member("/abs", data=b"x"), "absolute path"),
        (member("hard", tarfile.LNKTYPE, link="../../outside"), "`..`"),
        (member("hard", tarfile.LNKTYPE, link="/etc/passwd"), "absolute path"),
        (member("hard", tarfile.LNKTYPE, link="missing"), "not a file earlier"),
        (member("bin", tarfile.LNKTYPE, link="bin"), "not a file earlier"),
        (member("x", tarfile.SYMTYPE, link="y"), None),
    ],
)
def test_unsafe_members_are_refused(tmp_path: Path, bad: Member, why: str | None) -> None:
    image_dir = tmp_path / "images"
    source = tarball(tmp_path / "bad.tar", [*TREE, bad])
    if why is None:  # the control: a relative symlink is fine
        store.import_image(str(image_dir), "img", source)
        return
    with pytest.raises(ImageError) as caught:
        store.import_image(str(image_dir), "img", source)
    message = str(caught.value)
    assert why in message and repr(bad[0].name) in message and source in message
    assert caught.value.name == "img" and caught.value.path == str(image_dir / "img")
    assert contents(image_dir) == []
    assert not (tmp_path / "evil").exists() and not Path("/abs").exists()


def test_symlink_escape_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    source = tarball(
        tmp_path / "escape.tar",
        [member("link", tarfile.SYMTYPE, link=str(outside)), member("link/evil", data=b"x")],
    )
    with pytest.raises(ImageError, match="through the symlink link"):
        store.import_image(str(tmp_path / "images"), "img", source)
    assert list(outside.iterdir()) == []


def test_hard_link_through_a_symlink_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "host-file"
    target.write_text("host\n")
    source = tarball(
        tmp_path / "escape.tar",
        [member("s", tarfile.SYMTYPE, link=str(target)), member("h", tarfile.LNKTYPE, link="s")],
    )
    with pytest.raises(ImageError, match="hard link to 's'"):
        store.import_image(str(tmp_path / "images"), "img", source)
    assert target.stat().st_nlink == 1


def test_a_file_replaces_a_symlink_instead_of_writing_through_it(tmp_path: Path) -> None:
    target = tmp_path / "host-file"
    target.write_text("host\n")
    source = tarball(
        tmp_path / "replace.tar",
        [member("f", tarfile.SYMTYPE, link=str(target)), member("f", data=b"image\n")],
    )
    store.import_image(str(tmp_path / "images"), "img", source)
    assert target.read_text() == "host\n"
    assert (tmp_path / "images/img/f").read_text() == "image\n"
    assert not (tmp_path / "images/img/f").is_symlink()


def test_device_nodes_are_skipped_with_a_note(tmp_path: Path) -> None:
    null, _ = member("dev/null", tarfile.CHRTYPE, mode=0o666)
    null.devmajor, null.devminor = 1, 3
    source = tarball(tmp_path / "docker.tar", [member("dev/", tarfile.DIRTYPE), (null, None)])
    notes: list[str] = []
    store.import_image(str(tmp_path / "images"), "img", source, progress=notes.append)
    assert list((tmp_path / "images/img/dev").iterdir()) == []
    assert any("skipped 1 device node(s) (dev/null)" in note for note in notes)


@pytest.mark.parametrize("content", [b"not a tarball at all\n" * 40, b"\x1f\x8b\x08\x00trunc"])
def test_unreadable_archive_is_an_image_error(tmp_path: Path, content: bytes) -> None:
    source = tmp_path / "junk.tar.gz"
    source.write_bytes(content)
    with pytest.raises(ImageError, match="not a readable tar archive"):
        store.import_image(str(tmp_path / "images"), "img", str(source))
    assert contents(tmp_path / "images") == []


def test_truncated_archive_leaves_nothing(tmp_path: Path) -> None:
    whole = Path(tarball(tmp_path / "whole.tar", [member("big", data=os.urandom(100_000))], "gz"))
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(whole.read_bytes()[:50_000])
    with pytest.raises(ImageError):
        store.import_image(str(tmp_path / "images"), "img", str(cut))
    assert contents(tmp_path / "images") == []


def test_failed_replacement_keeps_the_old_image(tmp_path: Path) -> None:
    image_dir = tmp_path / "images"
    store.import_image(str(image_dir), "img", tarball(tmp_path / "good.tar", TREE))
    bad = tarball(tmp_path / "bad.tar", [member("new", data=b"new"), member("../evil")])
    with pytest.raises(ImageError):
        store.import_image(str(image_dir), "img", bad)
    assert (image_dir / "img/bin/tool").exists() and not (image_dir / "img/new").exists()
    assert leftovers(image_dir) == []


def test_interrupt_leaves_nothing_half_made(tmp_path: Path) -> None:
    def interrupt(note: str) -> None:
        if note.startswith("extracted"):  # inside the build, after every member is written
            raise KeyboardInterrupt

    image_dir = tmp_path / "images"
    with pytest.raises(KeyboardInterrupt):
        store.import_image(
            str(image_dir), "img", tarball(tmp_path / "t.tar", TREE), progress=interrupt
        )
    assert contents(image_dir) == []


def test_import_replaces_an_image_whole(tmp_path: Path) -> None:
    image_dir = tmp_path / "images"
    store.import_image(str(image_dir), "img", tarball(tmp_path / "one.tar", TREE))
    second = tarball(tmp_path / "two.tar", [member("only", data=b"2")])
    store.import_image(str(image_dir), "img", second)
    assert sorted(os.listdir(image_dir / "img")) == ["only"]
    assert contents(image_dir) == ["img"]


def test_leftovers_of_a_killed_writer_are_cleaned(tmp_path: Path) -> None:
    image_dir = tmp_path / "images"
    (image_dir / ".img.tmp-k1ll3d00/bin").mkdir(parents=True)
    (image_dir / ".other.old-abcdefgh").mkdir()
    (image_dir / ".keep-me").mkdir()
    store.import_image(str(image_dir), "img", tarball(tmp_path / "t.tar", TREE))
    assert leftovers(image_dir) == [".keep-me"]


def _tree(top: Path) -> Path:
    (top / "etc").mkdir(parents=True)
    (top / "etc/file").write_text("data\n")
    (top / "etc/file").chmod(0o600)
    os.link(top / "etc/file", top / "etc/again")
    (top / "bin").mkdir()
    (top / "bin/sh").symlink_to("/bin/busybox")
    (top / "escape").symlink_to(top.parent)  # a directory link: copied as a link, not entered
    os.mkfifo(top / "pipe")
    (top / "ro").mkdir()
    (top / "ro/inside").write_text("x")
    (top / "ro").chmod(0o555)
    return top


def test_directory_imports_as_a_copy(tmp_path: Path) -> None:
    source = _tree(tmp_path / "src")
    notes: list[str] = []
    store.import_image(str(tmp_path / "images"), "copy", str(source), progress=notes.append)
    root = tmp_path / "images/copy"
    assert (root / "etc/file").read_text() == "data\n"
    assert stat.S_IMODE((root / "etc/file").stat().st_mode) == 0o600
    assert (root / "etc/again").stat().st_ino == (root / "etc/file").stat().st_ino
    assert os.readlink(root / "bin/sh") == "/bin/busybox"
    assert os.readlink(root / "escape") == str(tmp_path)
    assert stat.S_ISFIFO((root / "pipe").lstat().st_mode)
    assert stat.S_IMODE((root / "ro").stat().st_mode) == 0o555
    assert (root / "ro/inside").read_text() == "x"
    assert any("copied 9 entries" in note for note in notes)
    store.remove_image(str(tmp_path / "images"), "copy")  # read-only dirs do not stop it
    assert contents(tmp_path / "images") == []


def test_directory_holding_the_image_dir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="contains the image dir"):
        store.import_image(str(tmp_path / "images"), "img", str(tmp_path))


def test_missing_source_is_an_image_error(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="no such tarball or directory"):
        store.import_image(str(tmp_path), "img", str(tmp_path / "nope.tar"))


def test_list_counts_blocks_once_per_inode(tmp_path: Path) -> None:
    image_dir = tmp_path / "images"
    root = _tree(tmp_path / "src")
    big = tmp_path / "big"
    big.write_bytes(os.urandom(300_000))
    (root / "etc/big").symlink_to(big)  # not followed: the 300 kB stay out of the size
    store.import_image(str(image_dir), "b", str(root))
    store.import_image(str(image_dir), "a", tarball(tmp_path / "t.tar", TREE))
    (image_dir / ".hidden").mkdir()
    (image_dir / "Bad Name").mkdir()
    (image_dir / "file").write_text("not an image")
    found = store.list_images(str(image_dir))
    assert [i.name for i in found] == ["a", "b"]
    for info in found:
        du = subprocess.run(
            ["du", "-s", "-B1", info.path], capture_output=True, text=True, check=True
        )
        assert info.size == int(du.stdout.split()[0])
        assert info.size < 300_000
    entries = [
        os.path.join(d, n) for d, dirs, files in os.walk(found[1].path) for n in dirs + files
    ]
    assert found[1].files == sum(1 for e in entries if not stat.S_ISDIR(os.lstat(e).st_mode)) == 7
    assert found[0].to_json()["created"].endswith("Z")


def test_list_of_a_missing_image_dir_is_empty(tmp_path: Path) -> None:
    assert store.list_images(str(tmp_path / "none")) == []


def test_remove(tmp_path: Path) -> None:
    image_dir = tmp_path / "images"
    store.import_image(str(image_dir), "img", tarball(tmp_path / "t.tar", TREE))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (image_dir / "linked").symlink_to(elsewhere)
    store.remove_image(str(image_dir), "img")
    store.remove_image(str(image_dir), "linked")
    assert contents(image_dir) == [] and elsewhere.is_dir()
    with pytest.raises(ImageError, match="no such image"):
        store.remove_image(str(image_dir), "img")
