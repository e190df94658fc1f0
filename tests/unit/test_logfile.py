"""Opening a sandbox's log: what is refused, and what a new or reused log becomes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from sandman.kernel import logfile


def test_a_new_log_is_made_private(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    fd = logfile.open_for_append(str(path))
    try:
        os.write(fd, b"line\n")
    finally:
        os.close(fd)
    assert stat.S_IMODE(path.stat().st_mode) == logfile.LOG_MODE
    assert path.read_bytes() == b"line\n"


def test_an_existing_log_is_appended_to_and_made_private(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    path.write_bytes(b"old\n")
    path.chmod(0o666)
    os.close(logfile.open_for_append(str(path)))
    assert stat.S_IMODE(path.stat().st_mode) == logfile.LOG_MODE
    assert path.read_bytes() == b"old\n"


def _symlink(tmp_path: Path, path: Path) -> None:
    path.symlink_to(tmp_path / "victim")


def _hardlink(tmp_path: Path, path: Path) -> None:
    os.link(tmp_path / "victim", path)


def _fifo(tmp_path: Path, path: Path) -> None:
    os.mkfifo(path)


def _directory(tmp_path: Path, path: Path) -> None:
    path.mkdir()


@pytest.mark.parametrize(
    ("plant", "what"),
    [
        (_symlink, "is a symlink"),
        (_hardlink, "hard link"),
        (_fifo, "FIFO"),
        (_directory, "is a directory"),
    ],
)
@pytest.mark.parametrize("opener", [logfile.open_for_append, logfile.open_for_reading])
def test_what_is_not_a_log_of_its_own_is_refused(
    tmp_path: Path, plant: object, what: str, opener: object
) -> None:
    victim = tmp_path / "victim"
    victim.write_text("secret\n")
    victim.chmod(0o600)
    path = tmp_path / "web.log"
    plant(tmp_path, path)  # type: ignore[operator]
    with pytest.raises(logfile.LogFileError) as refused:
        opener(str(path))  # type: ignore[operator]
    message = str(refused.value)
    assert what in message and f"rm {path}" in message, message
    assert message.startswith(f"{path}: ")
    assert victim.read_text() == "secret\n"
    assert stat.S_IMODE(victim.stat().st_mode) == 0o600


def test_reading_a_missing_log_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        logfile.open_for_reading(str(tmp_path / "none.log"))
