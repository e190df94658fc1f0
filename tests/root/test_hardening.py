"""Attacks on what sandman writes for a sandbox (its log, its image, its defaults): each test
performs the attack and fails if its defence is removed (README, "Security")."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from test_sandboxes import Sandman, busybox_image, sm, unit, wait_for

from sandman.digest import digest
from sandman.images import store

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


# ---------------------------------------------------------------------------------------------
# Defaults when a unit says nothing


def _pids_max(sm: Sandman, name: str) -> str:
    found = [Path(d, "pids.max") for d in sm.sandbox_cgroups(name) if Path(d, "pids.max").exists()]
    assert len(found) == 1, found
    return found[0].read_text().strip()


def _shm_bytes(sm: Sandman, name: str) -> int:
    """/dev/shm's size as statfs shows it inside (df -k: 1K blocks)."""
    line = sm.exec(name, "df", "-k", "/dev/shm").out.splitlines()[-1]
    return int(line.split()[1]) * 1024


def test_a_sandbox_that_says_nothing_gets_bounded_pids_and_shm(sm: Sandman) -> None:
    """A fork bomb stops at 4096 tasks and /dev/shm holds 64M, seen from inside and outside."""
    sm.write("plain", unit())
    sm.write("lifted", unit(rest='[resources]\npids_max = "max"\nshm_size = "max"\n'))
    sm.apply()
    assert _pids_max(sm, "plain") == "4096"
    assert _shm_bytes(sm, "plain") == 64 * 1024**2
    pid = sm.running_init("plain")
    assert ",size=65536k," in _shm_options(pid), _shm_options(pid)
    # Beyond the size, writes fail inside: the host's RAM is not the sandbox's to fill.
    full = sm.sh("plain", "dd if=/dev/zero of=/dev/shm/fill bs=1M count=80", expect=None)
    assert full.code != 0 and "No space left" in full.err, full
    assert _pids_max(sm, "lifted") == "max"
    assert _shm_bytes(sm, "lifted") > 64 * 1024**2


def test_a_sandbox_applied_before_the_defaults_gets_the_pid_limit_live(sm: Sandman) -> None:
    """A sandbox as an earlier sandman left it (no PID limit, no shm_size in its record): the
    next plan updates pids_max in place, the init keeps running, /dev/shm is left as it is."""
    sm.write("old", unit())
    sm.apply()
    init = sm.init("old")
    path = sm.record_path("old")
    record = json.loads(path.read_text())
    record["unit"]["resources"]["pids_max"] = None
    del record["unit"]["resources"]["shm_size"]
    record["digest"] = digest(record["unit"])
    path.write_text(json.dumps(record))
    for directory in sm.sandbox_cgroups("old"):
        if Path(directory, "pids.max").exists():
            Path(directory, "pids.max").write_text("max")
    planned = sm.run("plan", str(sm.units)).out
    assert "~ sandbox/old: update in place (resources.pids_max)" in planned, planned
    assert "    resources.pids_max: (unset) -> 4096\n" in planned, planned
    assert "0 to recreate" in planned, planned
    sm.apply()
    assert sm.init("old") == init
    assert _pids_max(sm, "old") == "4096"
    assert "No changes" in sm.run("plan", str(sm.units)).out


def _shm_options(pid: int) -> str:
    for line in Path(f"/proc/{pid}/mounts").read_text().splitlines():
        fields = line.split()
        if fields[1] == "/dev/shm":
            return f",{fields[3]},"
    raise AssertionError(f"no /dev/shm in the mounts of {pid}")


# ---------------------------------------------------------------------------------------------
# Tar bombs


def test_a_tar_bomb_is_refused_by_image_import_and_leaves_nothing(tmp_path: Path) -> None:
    """A .tar.gz of some kilobytes holding a 64M file of zeros, imported as root with a 16M
    --max-size: refused with the archive and the limit named, and no image nor temp dir left."""
    payload = tmp_path / "payload"
    payload.mkdir()
    with (payload / "zeros").open("wb") as handle:
        handle.truncate(64 * 1024**2)  # sparse on disk; tar stores its 64M of zeros
    bomb = tmp_path / "bomb.tar.gz"
    subprocess.run(["tar", "-czf", str(bomb), "-C", str(payload), "."], check=True)
    assert bomb.stat().st_size < 1024**2
    image_dir = tmp_path / "images"
    argv = [sys.executable, "-m", "sandman", "image", "import", "bomb", str(bomb)]
    argv += ["--image-dir", str(image_dir), "--max-size", "16M"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    assert done.returncode == 1, done
    assert str(bomb) in done.stderr and "16M" in done.stderr and "--max-size" in done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    assert set(os.listdir(image_dir)) <= {store.LOCK}  # no image, no temporary
