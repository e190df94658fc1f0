"""Data dirs and lock files: made private, closed when found open, refused when not a dir.

(Who may not enter them is tested as root, by another user, in tests/root/test_data_security.py.)
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from sandman.apply.lock import LockBusyError, state_lock
from sandman.lockfile import LockFileError, held
from sandman.private_dirs import PrivateDirError, private_dir


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_every_level_made_is_0700(tmp_path: Path) -> None:
    made = private_dir(str(tmp_path / "a/b/c"), "image dir (--image-dir)")
    assert made == str(tmp_path / "a/b/c")
    assert [_mode(tmp_path / p) for p in ("a", "a/b", "a/b/c")] == [0o700] * 3


def test_an_open_dir_is_closed_and_its_parents_left_alone(tmp_path: Path) -> None:
    (tmp_path / "top/images").mkdir(parents=True)
    (tmp_path / "top").chmod(0o755)
    (tmp_path / "top/images").chmod(0o775)
    private_dir(str(tmp_path / "top/images"), "image dir (--image-dir)")
    assert _mode(tmp_path / "top/images") == 0o700
    assert _mode(tmp_path / "top") == 0o755  # not sandman's: not changed


def test_a_file_in_the_way_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "logs").write_text("")
    with pytest.raises(PrivateDirError, match=r"`.*logs` is not a directory; remove it"):
        private_dir(str(tmp_path / "logs"), "log dir (--log-dir)")


def test_a_dir_above_that_every_user_may_write_is_refused(tmp_path: Path) -> None:
    (tmp_path / "open").mkdir(mode=0o777)
    (tmp_path / "open").chmod(0o777)
    with pytest.raises(PrivateDirError, match=r"is inside `.*open`, where every user can swap"):
        private_dir(str(tmp_path / "open/images"), "image dir (--image-dir)")
    (tmp_path / "open").chmod(0o1777)  # sticky, as /tmp: no one renames what is not theirs
    private_dir(str(tmp_path / "open/images"), "image dir (--image-dir)")


def test_the_lock_file_is_0600_in_a_0700_dir(tmp_path: Path) -> None:
    with state_lock(str(tmp_path / "state")):
        assert _mode(tmp_path / "state") == 0o700
        assert _mode(tmp_path / "state/lock") == 0o600
        busy = pytest.raises(LockBusyError, match="another sandman apply holds")
        with busy, state_lock(str(tmp_path / "state"), wait=False):
            pass


def test_a_lock_path_that_is_a_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "elsewhere").write_text("")
    (tmp_path / "state/lock").symlink_to(tmp_path / "elsewhere")
    refused = pytest.raises(LockFileError, match="cannot open the lock file")
    with refused, held(str(tmp_path / "state/lock"), "state dir (--state-dir)"):
        pass
