"""A copy of a directory tree as an image: modes, ownership, times, extended attributes (file
capabilities such as ping's), symlinks as symlinks, hard links as hard links.

Symlinks are never followed, so the copy holds exactly the source tree; device nodes and sockets
are skipped (sandman builds each sandbox's /dev, and a socket belongs to a running process).
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Callable

_SHOWN = 5  # skipped entries named in the note


def copy_tree(source: str, dest: str, report: Callable[[str], None]) -> None:
    """Copy the contents of SOURCE into DEST, an existing empty directory."""
    copier = _Copier(source, dest)
    copier.run()
    if copier.skipped:
        shown = ", ".join(copier.skipped[:_SHOWN]) + (", …" if len(copier.skipped) > _SHOWN else "")
        report(f"skipped {len(copier.skipped)} device node(s) or socket(s) ({shown})")
    report(f"copied {copier.count} entries from {source}")


class _Copier:
    def __init__(self, source: str, dest: str) -> None:
        self.source = source
        self.dest = dest
        self.linked: dict[tuple[int, int], str] = {}
        self.skipped: list[str] = []
        self.count = 0

    def run(self) -> None:
        directories = [("", os.stat(self.source))]
        pending = [""]
        while pending:
            relative = pending.pop()
            with os.scandir(os.path.join(self.source, relative)) as entries:
                for entry in sorted(entries, key=lambda e: e.name):
                    child = os.path.join(relative, entry.name)
                    info = entry.stat(follow_symlinks=False)
                    if stat.S_ISDIR(info.st_mode):
                        # 0700 while filling; the real mode comes last (it may forbid writing).
                        os.mkdir(os.path.join(self.dest, child), 0o700)
                        directories.append((child, info))
                        pending.append(child)
                    else:
                        self._copy(child, info)
        # Children before parents, so filling a child does not change its parent's mtime again.
        for relative, info in reversed(directories):
            self._attributes(relative, info)
        self.count += len(directories) - 1

    def _copy(self, relative: str, info: os.stat_result) -> None:
        source = os.path.join(self.source, relative)
        target = os.path.join(self.dest, relative)
        key = (info.st_dev, info.st_ino)
        if info.st_nlink > 1 and key in self.linked:
            os.link(self.linked[key], target, follow_symlinks=False)
            self.count += 1
            return
        mode = info.st_mode
        if stat.S_ISLNK(mode):
            os.symlink(os.readlink(source), target)
        elif stat.S_ISREG(mode):
            shutil.copyfile(source, target, follow_symlinks=False)
        elif stat.S_ISFIFO(mode):
            os.mkfifo(target)
        else:
            self.skipped.append(relative)
            return
        if info.st_nlink > 1:
            self.linked[key] = target
        self._attributes(relative, info)
        self.count += 1

    def _attributes(self, relative: str, info: os.stat_result) -> None:
        source = os.path.join(self.source, relative)
        target = os.path.join(self.dest, relative)
        if os.geteuid() == 0:
            # Owner first: chown clears setuid bits and file capabilities, copystat sets them.
            os.chown(target, info.st_uid, info.st_gid, follow_symlinks=False)
        shutil.copystat(source, target, follow_symlinks=False)
