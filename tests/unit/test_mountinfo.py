"""The one mountinfo unescaper (sandman/kernel/mountinfo.py), and its two readers: the cgroup
mode detection and observe's mount points."""

from __future__ import annotations

import pytest

from sandman.kernel import cgroup
from sandman.kernel.mountinfo import unescape
from sandman.observe import procs


@pytest.mark.parametrize(
    ("field", "path"),
    [
        ("/plain/path", "/plain/path"),
        ("/my\\040dir", "/my dir"),
        ("/tab\\011here", "/tab\there"),
        ("/new\\012line", "/new\nline"),
        ("/back\\134slash", "/back\\slash"),
        ("\\040lead\\040and\\040trail\\040", " lead and trail "),
        # An escaped backslash followed by digits is a backslash and the digits, not a space.
        ("/x\\134040", "/x\\040"),
        # Only three octal digits make an escape: a lone backslash stays as it is.
        ("/odd\\9", "/odd\\9"),
    ],
)
def test_unescape(field: str, path: str) -> None:
    assert unescape(field) == path


def test_both_readers_unescape_the_mount_point(monkeypatch: pytest.MonkeyPatch) -> None:
    line = "60 1 0:41 / /mnt/a\\040b\\011c rw,relatime shared:1 - cgroup2 cgroup2 rw\n"
    assert cgroup.mode_from_mountinfo(line, "/mnt/a b\tc") == "v2"
    monkeypatch.setattr(procs, "_read", lambda path: line.encode())
    assert procs.mount_points("self") == {"/mnt/a b\tc"}
