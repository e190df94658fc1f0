"""Attacks by another local user on sandman's data: images, persistent upper dirs, locks, and a
directory import of a tree that user owns. Each test fails if its defence is removed.

The attacker is a throwaway account (`useradd`, removed with `userdel -r` after the test). For
its attempts to mean anything, every test's private tree (the `tmp_path` override below) sits in
a 0755 dir under /tmp rather than under pytest's 0700 base dir: what stops the user must be the
modes sandman gives its own dirs, nothing above them.
"""

from __future__ import annotations

import io
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_sandboxes import Result, Sandman, busybox_image, probe_unit, sm

__all__ = ["busybox_image", "sm"]  # the fixtures, used by name

pytestmark = pytest.mark.root

EUID_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("uid=%d euid=%d\n", (int)getuid(), (int)geteuid()); return 0; }
"""

# Swaps ./sub (a real dir of the user's) and ./link (a symlink to /etc) until killed.
SWAP_C = r"""
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    puts("swapping");
    fflush(stdout);
    for (;;)
        syscall(SYS_renameat2, AT_FDCWD, "sub", AT_FDCWD, "link", 2 /* RENAME_EXCHANGE */);
}
"""


@dataclass(frozen=True)
class Intruder:
    name: str
    uid: int
    gid: int

    def run(self, *argv: str) -> subprocess.CompletedProcess[str]:
        """ARGV as this user, no supplementary groups, from /."""
        return subprocess.run(
            argv,
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            cwd="/",
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )

    def popen(self, *argv: str, cwd: Path) -> subprocess.Popen[str]:
        return subprocess.Popen(
            argv,
            user=self.uid,
            group=self.gid,
            extra_groups=[],
            cwd=cwd,
            stdout=subprocess.PIPE,
            text=True,
        )

    def cannot_exec(self, path: Path) -> None:
        """Exec as the user fails with EACCES (a setuid binary that ran would print its euid)."""
        try:
            ran = self.run(str(path))
        except PermissionError:
            return
        pytest.fail(f"{self.name} ran {path}: {ran.stdout.strip()}")

    def cannot_read(self, path: Path) -> None:
        read = self.run("/bin/cat", str(path))
        assert read.returncode != 0 and "Permission denied" in read.stderr, (path, read)


@pytest.fixture
def tmp_path() -> Iterator[Path]:
    """Overrides pytest's tmp_path (and with it the `sm` instance's tree) for this module: a
    0755 dir under /tmp, which other users can enter, removed after."""
    top = Path(tempfile.mkdtemp(prefix="sandman-data-security-", dir="/tmp"))
    top.chmod(0o755)
    yield top
    shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def intruder() -> Iterator[Intruder]:
    name = f"smt{secrets.token_hex(4)}"
    subprocess.run(["useradd", "--create-home", "--shell", "/bin/sh", name], check=True)
    try:
        uid = int(subprocess.run(["id", "-u", name], capture_output=True, check=True).stdout)
        gid = int(subprocess.run(["id", "-g", name], capture_output=True, check=True).stdout)
        yield Intruder(name, uid, gid)
    finally:
        subprocess.run(["userdel", "-r", name], capture_output=True, check=False)


@pytest.fixture(scope="module")
def probes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Static probes, built root-only; tests copy what the user must run into their own tree."""
    compiler = shutil.which("gcc")
    assert compiler, "gcc is needed to build the probes; `sh contrib/setup.sh --test`"
    directory = tmp_path_factory.mktemp("data-probes")
    for name, source in (("euid", EUID_C), ("swap", SWAP_C)):
        (directory / f"{name}.c").write_text(source)
        binary = str(directory / name)
        subprocess.run([compiler, "-static", "-O1", "-o", binary, f"{binary}.c"], check=True)
    return directory


def _member(name: str, mode: int, data: bytes | None) -> tuple[tarfile.TarInfo, bytes | None]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.REGTYPE if data is not None else tarfile.DIRTYPE
    info.uid = info.gid = 0
    info.mode = mode
    info.size = len(data) if data is not None else 0
    return info, data


SECRET = b"only for the image's own users\n"


def _open_dirs(sm: Sandman) -> None:
    """What an older sandman (or its tmpfiles.d line) left: data dirs open to everyone."""
    for directory in (sm.state_dir, sm.log_dir, sm.root / "sandboxes"):
        directory.mkdir(mode=0o755, exist_ok=True)
        directory.chmod(0o755)
    sm.image_dir.chmod(0o755)


def _image(sm: Sandman, action: str, *args: str, expect: int | None = 0) -> Result:
    """`sandman image ACTION --image-dir ... ARGS` (image commands take their options after the
    action, so Sandman.run does not fit)."""
    argv = [sys.executable, "-m", "sandman", "image", action, "--image-dir", str(sm.image_dir)]
    done = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=120, check=False)
    result = Result(tuple(argv[3:] + list(args)), done.returncode, done.stdout, done.stderr)
    if expect is not None:
        assert result.code == expect, f"expected exit {expect}\n{result}"
    return result


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_setuid_root_binary_of_a_tarball_image_is_out_of_other_users_reach(
    sm: Sandman, intruder: Intruder, probes: Path, tmp_path: Path
) -> None:
    members = [
        _member("bin/", 0o755, None),
        _member("bin/euid", 0o4755, (probes / "euid").read_bytes()),
        _member("etc/", 0o755, None),
        _member("etc/secret", 0o644, SECRET),
    ]
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    _open_dirs(sm)
    _image(sm, "import", "evil", str(archive))
    image = sm.image_dir / "evil"
    assert stat.S_IMODE(os.stat(image / "bin/euid").st_mode) == 0o4755  # kept: sudo is legitimate
    intruder.cannot_exec(image / "bin/euid")
    intruder.cannot_read(image / "etc/secret")
    assert _mode(sm.image_dir) == 0o700


def test_a_setuid_root_binary_of_a_directory_import_is_out_of_other_users_reach(
    sm: Sandman, intruder: Intruder, probes: Path, tmp_path: Path
) -> None:
    source = tmp_path / "tree"
    (source / "bin").mkdir(parents=True)
    (source / "etc").mkdir()
    shutil.copy(probes / "euid", source / "bin/euid")
    (source / "bin/euid").chmod(0o4755)
    (source / "etc/secret").write_bytes(SECRET)
    (source / "etc/secret").chmod(0o644)
    _open_dirs(sm)
    _image(sm, "import", "copied", str(source))
    image = sm.image_dir / "copied"
    assert stat.S_IMODE(os.stat(image / "bin/euid").st_mode) == 0o4755
    intruder.cannot_exec(image / "bin/euid")
    intruder.cannot_read(image / "etc/secret")


def test_a_persistent_sandboxs_files_are_out_of_other_users_reach(
    sm: Sandman, intruder: Intruder, probes: Path
) -> None:
    """The sandbox plants a setuid binary (its root is a mapped host uid) and a 0644 file in its
    persistent upper dir; it still reads them, another user cannot run or read them. Every data
    dir, found open, is closed."""
    probes.chmod(0o755)  # the sandbox's root is not the host's root: it needs the x bit
    (probes / "euid").chmod(0o755)
    sm.write(
        "box",
        probe_unit(probes, rest='[rootfs]\nimage = "busybox"\npersistent = true\n'),
    )
    _open_dirs(sm)
    sm.apply()
    sm.sh("box", "cp /opt/probes/euid /planted && chmod 4755 /planted && echo kept > /kept")
    assert sm.exec("box", "cat", "/kept").out == "kept\n"
    assert sm.exec("box", "/planted").out.startswith("uid=0 ")
    upper = sm.root / "sandboxes/box/upper"
    planted = os.stat(upper / "planted")
    assert planted.st_uid != 0 and planted.st_mode & stat.S_ISUID, planted
    intruder.cannot_exec(upper / "planted")
    intruder.cannot_read(upper / "kept")
    for directory in (sm.state_dir, sm.image_dir, sm.log_dir, sm.root / "sandboxes"):
        assert _mode(directory) == 0o700, directory


def _swap_source(tmp_path: Path, intruder: Intruder, probes: Path) -> Path:
    """A tree the user owns: ./sub a dir of files named as files of /etc (its own `shadow`
    among them, so a copy by path finds every name whichever way the swap stands), ./link a
    symlink to /etc."""
    source = tmp_path / "source"
    (source / "sub").mkdir(parents=True)
    for name in ("shadow", "passwd", "group", "hostname", "hosts"):
        if Path("/etc", name).is_file() and not Path("/etc", name).is_symlink():
            (source / "sub" / name).write_text("the user's own\n")
    (source / "link").symlink_to("/etc")
    shutil.copy(probes / "swap", tmp_path / "swap")
    (tmp_path / "swap").chmod(0o755)
    for path in [source, *source.rglob("*")]:
        os.lchown(path, intruder.uid, intruder.gid)
    return source


def test_a_directory_import_never_follows_a_subdirectory_swapped_for_a_symlink(
    sm: Sandman, intruder: Intruder, probes: Path, tmp_path: Path
) -> None:
    shadows = {Path("/etc/shadow").read_bytes()}
    source = _swap_source(tmp_path, intruder, probes)
    swapper = intruder.popen(str(tmp_path / "swap"), cwd=source)
    imported: list[tuple[str, Result]] = []
    failed: list[tuple[str, Result]] = []
    try:
        assert swapper.stdout is not None and swapper.stdout.readline() == "swapping\n"
        # Until both outcomes were seen: on a fast machine nearly every import meets a swap.
        for attempt in range(40):
            if attempt >= 12 and imported and failed:
                break
            name = f"race{attempt}"
            done = _image(sm, "import", name, str(source), expect=None)
            (imported if done.code == 0 else failed).append((name, done))
    finally:
        os.kill(swapper.pid, signal.SIGKILL)
        swapper.wait()
    shadows.add(Path("/etc/shadow").read_bytes())  # other tests may add users meanwhile
    for name, _ in imported:
        for path in (sm.image_dir / name).rglob("*"):
            if path.is_file() and not path.is_symlink():
                assert path.read_bytes() not in shadows, f"{path} is a copy of /etc/shadow"
        intruder.cannot_read(sm.image_dir / name / "sub/shadow")
    # A swap caught between listing and opening stops that import, with a clear message.
    for _, done in failed:
        assert done.code == 1 and "changed while being copied" in done.err, done
    # The race ran if an import met a swap: refused, or copied the swapped tree as it stood.
    met_a_swap = failed or any(
        stat.S_ISDIR(os.lstat(sm.image_dir / name / "link").st_mode) for name, _ in imported
    )
    assert met_a_swap, "every import saw the tree unswapped: the race was never run"


def test_a_user_holding_the_image_dir_cannot_stall_an_import(
    sm: Sandman, intruder: Intruder, tmp_path: Path
) -> None:
    """The user opened the image dir while it was still 0755 (as an older sandman left it) and
    holds flock on it: an import completes all the same, and the lock files are out of reach."""
    _open_dirs(sm)
    # One process: it opens the dir, locks it, says so, and becomes `sleep` holding the fd.
    script = f"exec 3< {sm.image_dir} && flock --nonblock 3 && echo held && exec sleep 600"
    holder = intruder.popen("/bin/sh", "-c", script, cwd=tmp_path)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        source = tmp_path / "tree"
        (source / "etc").mkdir(parents=True)
        _image(sm, "import", "tree", str(source))  # a stall ends in the 120 s timeout
        sm.destroy(str(sm.units))  # takes the state dir's lock
        for lock in (sm.image_dir / ".lock", sm.state_dir / "lock"):
            assert lock.is_file(), lock
            opened = intruder.run("/bin/sh", "-c", f"exec 3< {lock}")
            assert "Permission denied" in opened.stderr, (lock, opened)
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait()


def test_a_data_dir_owned_by_another_user_is_refused(sm: Sandman, intruder: Intruder) -> None:
    """Its owner could open it again, or swap what is inside, whatever sandman's chmod."""
    os.chown(sm.image_dir, intruder.uid, intruder.gid)
    source = sm.root / "tree"
    source.mkdir()
    refused = _image(sm, "import", "tree", str(source), expect=1)
    assert f"is owned by uid {intruder.uid}" in refused.err, refused
    assert "Traceback" not in refused.err, refused
    assert not (sm.image_dir / "tree").exists()


def test_a_data_dir_inside_a_dir_another_user_owns_is_refused(
    sm: Sandman, intruder: Intruder, tmp_path: Path
) -> None:
    """The owner of a dir above could rename the image dir away and put their own in its place
    (0700 or not), whose images sandboxes would then run."""
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    os.chown(theirs, intruder.uid, intruder.gid)
    image_dir = theirs / "images"
    image_dir.mkdir(mode=0o700)
    source = sm.root / "tree"
    source.mkdir()
    argv = [sys.executable, "-m", "sandman", "image", "import", "--image-dir", str(image_dir)]
    refused = subprocess.run(
        [*argv, "tree", str(source)], capture_output=True, text=True, timeout=120, check=False
    )
    assert refused.returncode == 1, refused
    assert f"is inside `{theirs}`, where uid {intruder.uid}" in refused.stderr, refused
    assert not (image_dir / "tree").exists()
