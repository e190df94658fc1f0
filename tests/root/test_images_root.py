"""The image store as root: ownership kept on import, and the busybox image runs chrooted.

(Named apart from tests/unit/test_images.py: the test directories are not packages, so two
modules called test_images would collide.)
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from sandman.images import store

pytestmark = pytest.mark.root
BUSYBOX = "/bin/busybox"


def _owned(name: str, uid: int, gid: int, mode: int, data: bytes | None = b"x") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = tarfile.REGTYPE if data is not None else tarfile.DIRTYPE
    info.uid, info.gid, info.mode = uid, gid, mode
    info.size = len(data) if data is not None else 0
    # Names the host maps elsewhere: the numbers in the archive must win.
    info.uname, info.gname = "root", "root"
    return info


def test_tarball_import_keeps_numeric_owners_and_setuid(tmp_path: Path) -> None:
    members = [
        _owned("home/", 0, 0, 0o755, None),
        _owned("home/user/", 1000, 1000, 0o700, None),
        _owned("home/user/file", 1000, 1001, 0o640),
        _owned("bin/su", 0, 0, 0o4755),
        _owned("var/mail", 65534, 8, 0o2775, None),
    ]
    with tarfile.open(tmp_path / "owned.tar.xz", "w:xz") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"x") if info.isreg() else None)
    root = Path(store.import_image(str(tmp_path / "i"), "own", str(tmp_path / "owned.tar.xz")).path)
    found = {
        rel: (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode))
        for rel in ("home/user", "home/user/file", "bin/su", "var/mail")
        for st in [os.lstat(root / rel)]
    }
    assert found == {
        "home/user": (1000, 1000, 0o700),
        "home/user/file": (1000, 1001, 0o640),
        "bin/su": (0, 0, 0o4755),
        "var/mail": (65534, 8, 0o2775),
    }


def test_directory_import_keeps_owners_links_and_setuid(tmp_path: Path) -> None:
    source = tmp_path / "src"
    (source / "home/user").mkdir(parents=True)
    (source / "home/user/file").write_text("data")
    os.link(source / "home/user/file", source / "home/user/same")
    (source / "home/user/link").symlink_to("file")
    os.chown(source / "home/user", 1000, 1000)
    os.chown(source / "home/user/file", 1000, 1001)
    os.lchown(source / "home/user/link", 1002, 1002)
    (source / "su").write_text("#!/bin/sh\n")
    os.chmod(source / "su", 0o4755)
    root = Path(store.import_image(str(tmp_path / "i"), "own", str(source)).path)
    assert (os.stat(root / "home/user").st_uid, os.stat(root / "home/user").st_gid) == (1000, 1000)
    copied = os.stat(root / "home/user/file")
    assert (copied.st_uid, copied.st_gid, copied.st_nlink) == (1000, 1001, 2)
    assert os.stat(root / "home/user/same").st_ino == copied.st_ino
    assert os.lstat(root / "home/user/link").st_uid == 1002
    assert stat.S_IMODE(os.stat(root / "su").st_mode) == 0o4755


@pytest.fixture
def busybox_image(tmp_path: Path) -> Path:
    if not os.path.exists(BUSYBOX):
        pytest.fail("install Debian's busybox-static: apt-get install busybox-static")
    return Path(store.build_busybox(str(tmp_path / "images")).path)


def test_busybox_image_is_roots_and_runs(busybox_image: Path) -> None:
    assert all(os.lstat(p).st_uid == 0 for p in busybox_image.rglob("*"))
    assert subprocess.run([str(busybox_image / "bin/busybox"), "true"], check=False).returncode == 0


def test_busybox_image_shell_works_chrooted(busybox_image: Path) -> None:
    def enter() -> None:
        os.chroot(busybox_image)
        os.chdir("/")

    script = "readlink -f /bin/sh; echo $((6 * 7)); id -un; ls /usr/bin/env"
    result = subprocess.run(
        ["/bin/sh", "-c", script],
        preexec_fn=enter,
        env={"PATH": "/bin:/sbin:/usr/bin:/usr/sbin"},
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["/bin/busybox", "42", "root", "/usr/bin/env"]


def test_tarball_import_keeps_file_capabilities_and_user_xattrs(tmp_path: Path) -> None:
    """What mmdebstrap and GNU tar write as pax SCHILY.xattr records: ping's cap_net_raw comes
    through (a root file system needs it), a label of the machine that made it does not."""
    import struct

    cap_net_raw = struct.pack("<5I", 0x02000000 | 1, 1 << 13, 0, 0, 0)  # VFS_CAP_REVISION_2
    ping = _owned("bin/ping", 0, 0, 0o755)
    ping.pax_headers = {
        "SCHILY.xattr.security.capability": cap_net_raw.decode("utf-8", "surrogateescape"),
        "SCHILY.xattr.user.origin": "debian",
        "SCHILY.xattr.security.selinux": "system_u:object_r:ping_exec_t:s0",
    }
    link = tarfile.TarInfo("bin/ping6")
    link.type, link.linkname = tarfile.SYMTYPE, "ping"
    link.pax_headers = {"SCHILY.xattr.user.origin": "debian"}
    with tarfile.open(tmp_path / "caps.tar", "w", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(ping, io.BytesIO(b"x"))
        tar.addfile(link)
    notes: list[str] = []
    image = store.import_image(
        str(tmp_path / "i"), "caps", str(tmp_path / "caps.tar"), progress=notes.append
    )
    ping_path = os.path.join(image.path, "bin/ping")
    assert os.getxattr(ping_path, "security.capability") == cap_net_raw
    assert os.getxattr(ping_path, "user.origin") == b"debian"
    assert "security.selinux" not in os.listxattr(ping_path)
    assert any("dropped extended attributes" in n and "security.selinux" in n for n in notes)
