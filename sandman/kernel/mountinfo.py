"""/proc/PID/mountinfo's fields as the kernel writes them: the one unescaper, used by the cgroup
mode detection here and by observe's mount points (which may import kernel/, not the reverse)."""

from __future__ import annotations

import re

_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """A mount point or root field as a path: the kernel writes space, tab, newline and
    backslash as octal escapes (`\\040`)."""
    if "\\" not in field:
        return field  # nearly every field: skip the regex
    return _ESCAPE.sub(lambda m: chr(int(m[1], 8)), field)
