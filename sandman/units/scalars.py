"""Parsers for the value syntaxes of unit files: sizes, durations, CPU shares, ids, names.

Each parser takes what tomllib produced and returns a typed value or raises ValueError with a
message a user can act on; pydantic turns that ValueError into a located unit problem. They never
raise anything else, whatever the input, so a random document cannot crash the loader.

No pydantic here (values.py wraps these as pydantic types): destroy reads a record's durations
with them, and must not pay pydantic's import.
"""

from __future__ import annotations

import datetime
import math
import re

from sandman.signals import SIGNAL_MAX, signal_name, signal_number

# Match these with fullmatch(): `$` also matches before a final newline, so "web\n" would pass.
# (The patterns stay `^...$` because the JSON Schemas carry them, and ECMAScript has no `\Z`.)
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]*$")
NAME_MAX = 32
IMAGE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
HOSTNAME_RE = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$"
)
ENV_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
IFNAME_MAX = 15
ID_MAX = 2**32 - 1
INT64_MAX = 2**63 - 1

# re.ASCII: without it \d also matches other scripts' digits ("٣M"), which no kernel file takes.
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([KMGT]?)\s*$", re.IGNORECASE | re.ASCII)
_SIZE_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
_DURATION_RE = re.compile(r"^\s*([+-]?)\s*(\d+(?:\.\d+)?)\s*(ms|s|min|h)\s*$", re.ASCII)
_DURATION_UNITS_NS = {"ms": 10**6, "s": 10**9, "min": 60 * 10**9, "h": 3600 * 10**9}
_PERCENT_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$", re.ASCII)
# Linux runs on at most 8192 CPUs (NR_CPUS); a larger share is a typo, and "1e400%" is infinity.
_PERCENT_MAX = 100 * 8192


def is_int(value: object) -> bool:
    """True for TOML integers; bool is a subclass of int in Python but never a number here."""
    return isinstance(value, int) and not isinstance(value, bool)


def parse_size(value: object) -> int:
    """`"64M"` or `67108864` to bytes; suffixes are powers of 1024."""
    if is_int(value):
        assert isinstance(value, int)
        if value < 0:
            raise ValueError(f"{value} is negative; a size is bytes >= 0, e.g. 64M")
        return value
    if isinstance(value, str):
        match = _SIZE_RE.match(value)
        if match:
            size = int(match.group(1)) * _SIZE_UNITS[match.group(2).upper()]
            if size > INT64_MAX:
                raise ValueError(f"{value!r} is too large; a size is at most {INT64_MAX} bytes")
            return size
        raise ValueError(
            f"{value!r} is not a size; write bytes or a number with K, M, G or T (powers of 1024), "
            'e.g. "256M"'
        )
    raise ValueError(f'{_type_name(value)} is not a size; write e.g. "256M" or 268435456')


def format_size(size: int) -> str:
    """Bytes as a unit would write them: the largest suffix that keeps the size whole."""
    for suffix in ("T", "G", "M", "K"):
        factor = _SIZE_UNITS[suffix]
        if size >= factor and size % factor == 0:
            return f"{size // factor}{suffix}"
    return str(size)


def parse_duration_ns(value: object, signed: bool = False) -> int:
    """`"5s"`, `"250ms"`, `"2min"` to nanoseconds; a sign only where offsets allow it."""
    if not isinstance(value, str):
        shown = repr(value) if is_int(value) or isinstance(value, float) else _type_name(value)
        raise ValueError(
            f'{shown} is not a duration; write a string with a unit, e.g. "5s", "250ms" or "2min"'
        )
    match = _DURATION_RE.match(value)
    if not match:
        raise ValueError(f'{value!r} is not a duration; write e.g. "5s", "250ms" or "2min"')
    sign, number, unit = match.groups()
    if sign and not signed:
        raise ValueError(f"{value!r} has a sign; this duration cannot be negative")
    # Exact arithmetic: a float would turn a long run of digits into infinity.
    from fractions import Fraction  # with decimal, 3 ms: only where a duration is read

    nanoseconds = round(Fraction(number) * _DURATION_UNITS_NS[unit])
    if nanoseconds > INT64_MAX:
        raise ValueError(f"{value!r} is too long; a duration is at most 292 years")
    return -nanoseconds if sign == "-" else nanoseconds


def format_duration_ns(nanoseconds: int) -> str:
    """The canonical spelling of a duration: the largest unit that keeps it whole."""
    if nanoseconds == 0:
        return "0s"  # every unit keeps zero whole; "0h" would read oddly
    sign = "-" if nanoseconds < 0 else ""
    magnitude = abs(nanoseconds)
    for unit in ("h", "min", "s", "ms"):
        step = _DURATION_UNITS_NS[unit]
        if magnitude % step == 0:
            return f"{sign}{magnitude // step}{unit}"
    # Decimals written out: a float would print 1ns as "1e-06ms", which no parser reads back.
    fraction = f"{magnitude % 10**6:06d}".rstrip("0")
    return f"{sign}{magnitude // 10**6}.{fraction}ms"


# Stop signals that cannot ask an init to end: SIGSTOP and the like pause it, and SIGCONT,
# SIGCHLD, SIGWINCH and SIGURG are ignored by default and mean other things to an init.
_NOT_STOP_SIGNALS = {
    "SIGSTOP",
    "SIGTSTP",
    "SIGTTIN",
    "SIGTTOU",
    "SIGCONT",
    "SIGCHLD",
    "SIGWINCH",
    "SIGURG",
}


def parse_signal(value: object) -> str:
    """A signal by name ("SIGTERM", "TERM", "SIGRTMIN+3", "RTMAX-2") or number (15), as its
    canonical name: two spellings of one signal are one value, never a change."""
    if is_int(value):
        assert isinstance(value, int)
        number = value
    elif isinstance(value, str):
        number = signal_number(value.strip().upper())
    else:
        raise ValueError(f'{_type_name(value)} is not a signal; write a name, e.g. "SIGTERM"')
    name = signal_name(number) if 1 <= number <= SIGNAL_MAX else str(number)
    if not 1 <= number <= SIGNAL_MAX or name.isdigit():
        raise ValueError(
            f'{value!r} is not a signal; write a name, e.g. "SIGTERM" or "SIGRTMIN+3", or a '
            f"number from 1 to {SIGNAL_MAX}"
        )
    if name in _NOT_STOP_SIGNALS:
        raise ValueError(f"{name} does not ask a process to end; use e.g. SIGTERM or SIGINT")
    return name


def parse_percent(value: object) -> float:
    """`"50%"` of one CPU to 50.0; `"200%"` is two CPUs."""
    if isinstance(value, str):
        match = _PERCENT_RE.match(value)
        if match:
            percent = float(match.group(1))
            if percent <= 0:
                raise ValueError(f"{value!r} is not above 0%; give at least 1%")
            if not math.isfinite(percent) or percent > _PERCENT_MAX:
                raise ValueError(
                    f"{value!r} is more than {_PERCENT_MAX // 100} CPUs; give at most "
                    f"{_PERCENT_MAX}%"
                )
            return percent
    shown = repr(value) if isinstance(value, str) else _type_name(value)
    raise ValueError(
        f'{shown} is not a CPU share; write a percentage of one CPU, e.g. "50%" or "200%"'
    )


def parse_name(value: object, what: str = "name") -> str:
    if not isinstance(value, str):
        raise ValueError(f"{_type_name(value)} is not a {what}; write a string")
    if NAME_RE.fullmatch(value) and len(value) > NAME_MAX:
        raise ValueError(
            f"{value!r} is {len(value)} characters long; a {what} has at most {NAME_MAX}"
        )
    if not NAME_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a valid {what}; use lowercase letters, digits and '-', starting "
            f"with a letter or digit, at most {NAME_MAX} characters"
        )
    return value


def parse_absolute_path(value: object) -> str:
    """An absolute path, normalised; `..` is refused so that a path cannot climb out of a root."""
    if not isinstance(value, str):
        raise ValueError(f"{_type_name(value)} is not a path; write an absolute path as a string")
    if not value.startswith("/"):
        raise ValueError(f'{value!r} is not absolute; write it from the root, e.g. "/{value}"')
    if "\0" in value:
        raise ValueError("the path holds a NUL byte")
    parts = [p for p in value.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise ValueError(f"{value!r} contains '..'; write the path without it")
    return "/" + "/".join(parts)


def _type_name(value: object) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a float",
        str: "a string",
        list: "an array",
        dict: "a table",
        datetime.datetime: "a date-time",
        datetime.date: "a date",
        datetime.time: "a time",
    }
    return names.get(type(value), type(value).__name__)


def type_name(value: object) -> str:
    return _type_name(value)
