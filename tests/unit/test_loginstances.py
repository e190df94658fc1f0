"""A sandbox's log: one file per start with a header, the earlier ones rotated and bounded, and
what `logs` reads of them (the last lines, the current file as it grows and is replaced)."""

from __future__ import annotations

import calendar
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sandman.kernel import logfile, loginstances
from sandman.observe import logread

T0 = 1_700_000_000.25  # 2023-11-14T22:13:20.250Z


def start(path: Path, at: float, output: bytes = b"") -> None:
    fd = loginstances.start_instance(str(path), "web", now=at)
    try:
        os.write(fd, output)
    finally:
        os.close(fd)


def test_a_start_writes_its_header_and_the_reader_skips_it(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    start(path, T0, b"hello\n")
    assert path.read_bytes() == b"-- sandman: web started 2023-11-14T22:13:20.250000Z --\nhello\n"
    (only,) = loginstances.instances(str(path))
    assert (only.started_at, only.current) == (T0, True)
    opened = logread.open_instance(str(path), current=True)
    assert opened is not None
    try:
        assert b"".join(logread.body(opened)) == b"hello\n"
    finally:
        os.close(opened.fd)


def test_a_header_counts_only_at_the_start_of_a_file() -> None:
    line = loginstances.header("web", T0)
    assert loginstances.parse_header(line + b"x") == (T0, len(line))
    assert loginstances.parse_header(b"x" + line) is None
    assert loginstances.parse_header(line[:-1]) is None  # cut before its newline


def test_each_start_rotates_the_last_one_under_its_start_time(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    start(path, T0, b"first\n")
    start(path, T0 + 60, b"second\n")
    assert sorted(os.listdir(tmp_path)) == ["web.log", "web.log.20231114T221320.250000Z"]
    found = loginstances.instances(str(path))
    assert [(i.started_at, i.current) for i in found] == [(T0, False), (T0 + 60, True)]


def test_a_start_that_wrote_nothing_is_dropped_not_rotated(tmp_path: Path) -> None:
    """Retries of a sandbox that cannot start must not push its last real output out."""
    path = tmp_path / "web.log"
    start(path, T0, b"the last real output\n")
    for attempt in range(loginstances.KEEP + 2):
        start(path, T0 + 1 + attempt)
    rotated = [i for i in loginstances.instances(str(path)) if not i.current]
    assert [i.started_at for i in rotated] == [T0]


def test_an_empty_log_of_an_older_sandman_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    path.write_bytes(b"")
    start(path, T0, b"new\n")
    assert os.listdir(tmp_path) == ["web.log"]


def test_a_log_without_header_is_rotated_under_its_mtime(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    path.write_bytes(b"from before headers\n")
    os.utime(path, (T0, T0))
    start(path, T0 + 60)
    old = tmp_path / "web.log.20231114T221320.250000Z"
    assert old.read_bytes() == b"from before headers\n"
    first = loginstances.instances(str(path))[0]
    assert (first.started_at, first.body) == (None, 0)


def test_earlier_starts_beyond_keep_are_removed_oldest_first(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    for n in range(loginstances.KEEP + 3):
        start(path, T0 + n, f"run {n}\n".encode())
    found = loginstances.instances(str(path))
    assert len(found) == loginstances.KEEP + 1
    assert [i.started_at for i in found] == [T0 + n for n in range(2, loginstances.KEEP + 3)]


def test_earlier_starts_are_bounded_in_bytes_but_the_newest_stays(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(loginstances, "KEEP_BYTES", 200)
    path = tmp_path / "web.log"
    start(path, T0, b"a" * 150)
    start(path, T0 + 1, b"b" * 150)
    start(path, T0 + 2, b"c" * 500)
    start(path, T0 + 3, b"d")
    found = loginstances.instances(str(path))
    assert [i.started_at for i in found] == [T0 + 2, T0 + 3]


def test_to_remove_keeps_the_newest_whatever_its_size() -> None:
    names = [(f"web.log.{n}", size) for n, size in enumerate((10, 10, 10**12))]
    assert loginstances.to_remove(names) == ["web.log.1", "web.log.0"]


@pytest.mark.parametrize("plant", ["symlink", "hardlink"])
def test_a_planted_link_is_refused_and_nothing_is_renamed(tmp_path: Path, plant: str) -> None:
    victim = tmp_path / "victim"
    victim.write_text("secret\n")
    logs = tmp_path / "logs"
    logs.mkdir()
    path = logs / "web.log"
    if plant == "symlink":
        path.symlink_to(victim)
    else:
        os.link(victim, path)
    with pytest.raises(logfile.LogFileError):
        loginstances.start_instance(str(path), "web")
    assert os.listdir(logs) == ["web.log"] and victim.read_text() == "secret\n"
    with pytest.raises(logfile.LogFileError):
        loginstances.instances(str(path))


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_rotated_log_left_by_another_user_becomes_roots_and_private(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    path.write_bytes(b"old\n")
    os.chown(path, 65534, 65534)
    path.chmod(0o666)
    start(path, T0)
    (old,) = (p for p in tmp_path.iterdir() if p.name != "web.log")
    info = old.stat()
    assert (info.st_uid, info.st_mode & 0o777) == (0, logfile.LOG_MODE)


def test_iso_times_round_once() -> None:
    assert loginstances.iso_time(1.9996) == "1970-01-01T00:00:02.000Z"
    assert loginstances.iso_time(T0, 6) == "2023-11-14T22:13:20.250000Z"
    assert loginstances.parse_iso("2023-11-14T22:13:20.250000Z") == T0


# -- reading


def opened_with(tmp_path: Path, output: bytes) -> logread.Opened:
    path = tmp_path / "web.log"
    start(path, T0, output)
    opened = logread.open_instance(str(path), current=True)
    assert opened is not None
    return opened


@pytest.mark.parametrize(
    ("output", "count", "lines"),
    [
        (b"a\nb\nc\n", 2, [b"b\n", b"c\n"]),
        (b"a\nb\nc", 2, [b"b\n", b"c"]),
        (b"a\nb\n", 5, [b"a\n", b"b\n"]),
        (b"", 3, []),
        (b"a\n", 0, []),
        (b"a\r\nprogress 1\rprogress 2\n", 1, [b"progress 1\rprogress 2\n"]),
    ],
)
def test_last_lines(tmp_path: Path, output: bytes, count: int, lines: list[bytes]) -> None:
    opened = opened_with(tmp_path, output)
    try:
        found, offset = logread.last_lines(opened, count)
    finally:
        os.close(opened.fd)
    assert found == lines
    assert offset == opened.instance.size - len(b"".join(lines))


def test_last_lines_read_back_over_many_blocks(tmp_path: Path) -> None:
    long = [f"{n:06d}".encode() * 3000 + b"\n" for n in range(40)]  # 18 kB a line
    opened = opened_with(tmp_path, b"".join(long))
    try:
        assert logread.last_lines(opened, 7)[0] == long[-7:]
        assert logread.last_lines(opened, 100)[0] == long
    finally:
        os.close(opened.fd)


def test_a_follower_reads_what_comes_then_the_next_start(tmp_path: Path) -> None:
    path = tmp_path / "web.log"
    opened = opened_with(tmp_path, b"before\n")
    follower = logread.Follower(str(path), opened, opened.instance.size)
    try:
        assert list(follower.poll()) == []
        with open(path, "ab") as handle:
            handle.write(b"more\n")
        assert list(follower.poll()) == [(None, b"more\n")]
        start(path, T0 + 60, b"next start\n")
        polled = list(follower.poll())
        instance = polled[0][0]
        assert instance is not None and instance.started_at == T0 + 60
        assert polled[1:] == [(None, b"next start\n")]
    finally:
        follower.close()


@given(st.floats(min_value=0, max_value=2**33, allow_nan=False))
def test_a_headers_time_reads_back_as_strptime_and_timegm_read_it(seconds: float) -> None:
    """parse_iso counts days itself (strptime imports 1-2 ms of modules): the same seconds."""
    text = loginstances.iso_time(seconds, 6)
    whole = calendar.timegm(time.strptime(text[:19], "%Y-%m-%dT%H:%M:%S"))
    assert loginstances.parse_iso(text) == whole + float(f"0.{text[20:26]}")
