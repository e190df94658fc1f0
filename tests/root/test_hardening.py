"""Attacks on what sandman writes for a sandbox (its log, its image, its defaults): each test
performs the attack and fails if its defence is removed (README, "Security")."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from test_sandboxes import Sandman, busybox_image, sm, unit, wait_for

__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

pytestmark = pytest.mark.root

TALKER = ("sh", "-c", "echo sandbox-output; exec sleep 1000")
SECRET = "root:secret-hash:19000:0:99999:7:::\n"


def _victim(tmp_path: Path) -> Path:
    """A root-only file standing for /etc/shadow."""
    victim = tmp_path / "victim"
    victim.write_text(SECRET)
    victim.chmod(0o600)
    return victim


def _snapshot(path: Path) -> tuple[str, int, int, int, int]:
    info = path.stat()
    return path.read_text(), info.st_mode, info.st_uid, info.st_gid, info.st_size


# ---------------------------------------------------------------------------------------------
# Log files


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_a_link_planted_at_the_log_path_is_refused(sm: Sandman, tmp_path: Path, link: str) -> None:
    """LOG_DIR/NAME.log made a symlink (or a hard link) to a root-only file before apply: the
    apply refuses to start the sandbox, names the path, and the file is untouched."""
    victim = _victim(tmp_path)
    before = _snapshot(victim)
    sm.log_dir.mkdir(parents=True, exist_ok=True)
    log = sm.log_dir / "talker.log"
    if link == "symlink":
        log.symlink_to(victim)
    else:
        os.link(victim, log)
    sm.write("talker", unit(command=TALKER))
    refused = sm.apply(expect=1)
    assert str(log) in refused.err and "Remove it" in refused.err, refused
    assert ("symlink" if link == "symlink" else "hard link") in refused.err, refused
    assert _snapshot(victim) == before
    assert not sm.record_path("talker").exists()
    shown = sm.run("logs", "talker", expect=1)
    assert "secret-hash" not in shown.out and str(log) in shown.err, shown
    # Once the planted link is gone, the same units apply and the log is the sandbox's own.
    log.unlink()
    sm.apply()
    wait_for(lambda: "sandbox-output" in log.read_text() or None, "the init's output in its log")
    assert _snapshot(victim) == before


def test_a_log_left_by_another_user_becomes_roots_and_private(sm: Sandman) -> None:
    sm.log_dir.mkdir(parents=True, exist_ok=True)
    log = sm.log_dir / "talker.log"
    log.write_text("")
    os.chown(log, 65534, 65534)
    log.chmod(0o666)
    sm.write("talker", unit(command=TALKER))
    sm.apply()
    info = log.stat()
    assert (info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)) == (0, 0, 0o640)
    wait_for(lambda: "sandbox-output" in log.read_text() or None, "the init's output in its log")


# ---------------------------------------------------------------------------------------------
# rootfs.mode = "bind": mount targets missing from the image


def test_bind_mode_makes_missing_mount_targets_through_the_idmapped_root(
    sm: Sandman, tmp_path: Path
) -> None:
    """In bind mode the root is the image itself, idmapped: a declared mount whose target the
    image lacks is made there as the sandbox's root (on disk: the image's root), and works."""
    source = tmp_path / "shared"
    source.mkdir(mode=0o755)
    (source / "hello").write_text("from the host\n")
    (source / "hello").chmod(0o644)
    # A directory of the image that belongs to another of its users: root may still add to it.
    image = sm.image_dir / "busybox"
    (image / "srv").mkdir(mode=0o755)
    os.chown(image / "srv", 1000, 1000)
    sm.write(
        "binder",
        unit(
            rest="""
            [rootfs]
            image = "busybox"
            mode = "bind"
            [[mount]]
            type = "tmpfs"
            target = "/scratch/deep"
            size = "1M"
            [[mount]]
            type = "bind"
            source = "SOURCE"
            target = "/data"
            read_only = true
            [[mount]]
            type = "bind"
            source = "SOURCE/hello"
            target = "/srv/conf/app.conf"
            read_only = true
            """.replace("SOURCE", str(source))
        ),
    )
    sm.apply()
    script = "echo x > /scratch/deep/f && cat /scratch/deep/f /data/hello /srv/conf/app.conf"
    seen = sm.sh("binder", script)
    assert seen.out == "x\nfrom the host\nfrom the host\n", seen
    mounts = sm.exec("binder", "cat", "/proc/self/mounts").out
    assert " /scratch/deep tmpfs " in mounts and " /data " in mounts, mounts
    # Made in the image, owned as the image's own root directories are (host 0 on disk).
    made_files = (image / "srv" / "conf", image / "srv" / "conf" / "app.conf")
    for made in (image / "scratch", image / "scratch" / "deep", image / "data", *made_files):
        assert (made.stat().st_uid, made.stat().st_gid) == (0, 0), made
    assert sm.exec("binder", "stat", "-c", "%u:%g", "/scratch").out.split() == ["0:0"]
