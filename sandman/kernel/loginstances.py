"""One log file per start of a sandbox, the earlier ones rotated and bounded.

`LOG_DIR/NAME.log` holds the output of the init that runs now (or ran last); each start (create,
recreate, a restart by the daemon) first renames it to `NAME.log.STAMP`, STAMP being when that
instance started, and keeps at most KEEP such files holding at most KEEP_BYTES together (the
newest is kept whatever its size). No sandman process stays beside a sandbox to write its log:
the init's stdout and stderr are the file itself, so sandman cannot cut a running instance's
file, nor stamp its lines. What is known of time without a writer is written or read here:
- when an instance started: the header line apply writes at offset 0 of a new file before the
  init runs (the sandbox writes only after it, so a header is never the sandbox's own text);
- when it last wrote: the file's mtime.
A start that left nothing but its header (an init that never wrote, a start that failed before
exec) is dropped at the next start rather than rotated, so that retries of a sandbox that cannot
start do not push its last real output out.
"""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
import contextlib
import os
import re
import time
from typing import NamedTuple

from sandman.kernel import logfile

KEEP = 5  # earlier instances kept
KEEP_BYTES = 64 * 1024 * 1024  # their total size, the newest earlier one always kept
_STAMP = "%Y%m%dT%H%M%S"
_STAMP_RE = re.compile(r"\d{8}T\d{6}\.\d{6}Z")
_HEADER_RE = re.compile(rb"-- sandman: (\S+) started (\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z) --\n")
_HEADER_MAX = 200  # bytes read to find a header


class Instance(NamedTuple):
    """One start's log file."""

    path: str
    started_at: float | None  # None for a file older than headers
    body: int  # the offset of the first byte the sandbox wrote (after the header)
    size: int
    modified: float  # the last write, sandbox's or header's
    current: bool  # NAME.log itself: the instance that runs now, or ran last


def header(name: str, started_at: float) -> bytes:
    return f"-- sandman: {name} started {iso_time(started_at, 6)} --\n".encode()


def parse_header(first: bytes) -> tuple[float, int] | None:
    """(start time, header length) of a file's first bytes, None when they are no header."""
    match = _HEADER_RE.match(first)
    if match is None:
        return None
    return parse_iso(match[2].decode()), match.end()


def iso_time(seconds: float, digits: int = 3) -> str:
    """UTC, `2026-01-02T10:00:00.123Z` (digits: of the fraction)."""
    scale = 10**digits
    units = round(seconds * scale)  # rounded once, so that .9999996 carries into the second
    whole, fraction = divmod(units, scale)
    text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
    return text + (f".{fraction:0{digits}d}" if digits else "") + "Z"


def parse_iso(text: str) -> float:
    """The seconds since the epoch of `iso_time`'s form. By arithmetic: strptime's first call
    imports _strptime and calendar and compiles its format, 1-2 ms of a create that rotates."""
    main, _, fraction = text.rstrip("Z").partition(".")
    date, _, clock = main.partition("T")
    year, month, day = map(int, date.split("-"))
    hour, minute, second = map(int, clock.split(":"))
    whole = _days_since_epoch(year, month, day) * 86400 + hour * 3600 + minute * 60 + second
    return whole + (float(f"0.{fraction}") if fraction else 0.0)


def _days_since_epoch(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a date of the proleptic Gregorian calendar (H. Hinnant's
    days_from_civil: years counted from March, so that February's length comes last)."""
    year -= month <= 2
    era, year_of_era = divmod(year, 400)
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def stamp(started_at: float) -> str:
    """The suffix of an earlier instance's file: sorts as the instances started."""
    whole, micro = divmod(round(started_at * 1_000_000), 1_000_000)
    return time.strftime(_STAMP, time.gmtime(whole)) + f".{micro:06d}Z"


def start_instance(path: str, name: str, now: float | None = None) -> int:
    """Rotate the log at PATH and begin the new instance's file with its header; an fd
    appending to it. Refused, as logfile.open_for_append refuses, when PATH is no file of its
    own (a planted link)."""
    started_at = time.time() if now is None else now
    _rotate(path)
    prune(path)
    fd = logfile.open_for_append(path, exclusive=True)
    try:
        os.write(fd, header(name, started_at))
    except BaseException:
        os.close(fd)
        raise
    return fd


def _rotate(path: str) -> None:
    """NAME.log to NAME.log.STAMP, or away when it holds nothing the sandbox wrote."""
    try:
        fd = logfile.open_for_reading(path)
    except FileNotFoundError:
        return
    try:
        found = describe(fd, path, current=True)
        # Whoever left it, what is kept is root's and private, as the log it was.
        os.fchown(fd, os.geteuid(), os.getegid())
        os.fchmod(fd, logfile.LOG_MODE)
    finally:
        os.close(fd)
    if found.size <= found.body:
        os.unlink(path)
        return
    started = found.started_at or found.modified
    target = f"{path}.{stamp(started)}"
    while os.path.lexists(target):  # two starts stamped alike: keep both, in order
        started += 1e-6
        target = f"{path}.{stamp(started)}"
    os.rename(path, target)


def prune(path: str) -> None:
    """Remove the earlier instances beyond KEEP, and beyond KEEP_BYTES together."""
    for name in to_remove(_rotated_sizes(path)):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(os.path.dirname(path), name))


def to_remove(rotated: list[tuple[str, int]]) -> list[str]:
    """Of (file name, size) of the earlier instances, those to remove: the oldest beyond KEEP,
    then the oldest while the rest hold more than KEEP_BYTES; the newest always stays."""
    newest_first = sorted(rotated, reverse=True)
    kept, total, gone = 0, 0, []
    for name, size in newest_first:
        if kept and (kept >= KEEP or total + size > KEEP_BYTES):
            gone.append(name)
            continue
        kept += 1
        total += size
    return gone


def _rotated_names(path: str) -> list[str]:
    directory, base = os.path.split(path)
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        return []
    prefix = f"{base}."
    return sorted(
        e for e in entries if e.startswith(prefix) and _STAMP_RE.fullmatch(e[len(prefix) :])
    )


def _rotated_sizes(path: str) -> list[tuple[str, int]]:
    directory = os.path.dirname(path)
    found = []
    for name in _rotated_names(path):
        with contextlib.suppress(FileNotFoundError):
            found.append((name, os.lstat(os.path.join(directory, name)).st_size))
    return found


def instances(path: str) -> list[Instance]:
    """Every instance's file of the log at PATH, oldest first, NAME.log last; each opened with
    logfile's refusals (a planted link raises LogFileError). Files gone meanwhile are left out."""
    directory = os.path.dirname(path)
    found = []
    paths = [os.path.join(directory, name) for name in _rotated_names(path)] + [path]
    for candidate in paths:
        try:
            fd = logfile.open_for_reading(candidate)
        except FileNotFoundError:
            continue
        try:
            found.append(describe(fd, candidate, current=candidate == path))
        finally:
            os.close(fd)
    return found


def describe(fd: int, path: str, current: bool) -> Instance:
    info = os.fstat(fd)
    parsed = parse_header(os.pread(fd, _HEADER_MAX, 0))
    started_at, body = parsed if parsed else (None, 0)
    return Instance(path, started_at, body, info.st_size, info.st_mtime, current)
