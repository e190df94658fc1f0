"""Signals by name and number, as libc numbers them, for the unit format and the kernel side.

SIGRTMIN is libc's (34 with glibc, which keeps the kernel's first two real-time signals for
itself), so "SIGRTMIN+3" is the signal systemd means by that name: its halt request.
"""

from __future__ import annotations

import re
import signal

SIGNAL_MAX = int(signal.SIGRTMAX)
_RTMIN = int(signal.SIGRTMIN)
_SIGNAL_RE = re.compile(r"^(?:SIG)?(RTMIN|RTMAX)([+-]\d+)?$|^(?:SIG)?([A-Z][A-Z0-9]*)$", re.ASCII)


def signal_name(number: int) -> str:
    """The canonical name of a signal number: "SIGTERM", "SIGRTMIN+3"; the number itself, as a
    string, when it names no signal."""
    if _RTMIN <= number <= SIGNAL_MAX:
        return "SIGRTMIN" if number == _RTMIN else f"SIGRTMIN+{number - _RTMIN}"
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)


def signal_number(text: str) -> int:
    """The number of a signal written as a name ("SIGTERM", "TERM", "SIGRTMIN+3", "RTMAX-2",
    upper case) or as digits; 0 when it names none."""
    if text.isascii() and text.isdigit():
        return int(text)
    match = _SIGNAL_RE.fullmatch(text)
    if match is None:
        return 0
    realtime, offset, classic = match.groups()
    if realtime:
        base = _RTMIN if realtime == "RTMIN" else SIGNAL_MAX
        number = base + int(offset or 0)
        return number if _RTMIN <= number <= SIGNAL_MAX else 0
    member = getattr(signal, f"SIG{classic}", None)
    return int(member) if isinstance(member, signal.Signals) else 0
