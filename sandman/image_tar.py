"""Extraction of a root filesystem tarball into a staged image, refusing what could escape it.

tarfile's own filters don't fit a rootfs: "data" and "tar" drop setuid bits, sticky bits and
group write (a rootfs needs its `su` and its 1777 /tmp), and Debian 12's Python has no filters at
all. So every member is checked here just before it is written (the checks look at what earlier
members left on disk): no absolute name, no `..`, no path through a symlink, no hard link to
anything but a regular file of the image. Ownership comes from the archive's numbers, not from
the host's user names. Device nodes are skipped: sandman builds each sandbox's /dev itself.
"""

from __future__ import annotations

import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from sandman.errors import ImageError

# What a damaged or foreign file raises while being read as a (compressed) tar archive.
_DAMAGED = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)
_SHOWN = 5  # skipped device nodes named in the note


def extract(name: str, path: str, archive: str, dest: str, report: Callable[[str], None]) -> None:
    """Extract ARCHIVE (plain, .gz, .xz or .bz2) into DEST for image NAME at PATH."""
    checker = _Checker(name, path, archive, dest)
    # Where tarfile has filters, "fully_trusted" keeps modes as they are (the checks are ours);
    # without it, Python 3.14 would apply the "data" filter.
    options: dict[str, Any] = {"numeric_owner": True}
    if hasattr(tarfile, "fully_trusted_filter"):
        options["filter"] = "fully_trusted"
    try:
        with tarfile.open(archive, "r:*") as tar:
            tar.extractall(dest, members=checker.members(tar), **options)
    except _DAMAGED as exc:
        raise ImageError(
            name, path, f"{archive} is not a readable tar archive (plain, .gz, .xz, .bz2): {exc}"
        ) from exc
    if checker.skipped:
        shown = ", ".join(checker.skipped[:_SHOWN]) + (
            ", …" if len(checker.skipped) > _SHOWN else ""
        )
        report(
            f"skipped {len(checker.skipped)} device node(s) ({shown}): sandboxes get their own /dev"
        )
    report(f"extracted {checker.count} entries from {archive}")


class _Checker:
    def __init__(self, name: str, path: str, archive: str, dest: str) -> None:
        self.name = name
        self.path = path
        self.archive = archive
        self.dest = dest
        self.skipped: list[str] = []
        self.count = 0

    def members(self, tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        # A generator: extractall writes each member before asking for the next, so each check
        # sees the tree as the earlier members made it.
        for member in tar:
            if self._admit(member):
                yield member

    def _admit(self, member: tarfile.TarInfo) -> bool:
        parts = self._parts(member, member.name, "its name")
        if member.ischr() or member.isblk():
            self.skipped.append(member.name)
            return False
        if not parts and not member.isdir():
            self._refuse(member, "stands for the image's root but is not a directory")
        self._no_symlink_before(member, parts[:-1])
        if member.islnk():
            member.linkname = self._hardlink_target(member)
        self._clear(member, os.path.join(self.dest, *parts))
        member.name = "/".join(parts) or "."
        self.count += 1
        return True

    def _parts(self, member: tarfile.TarInfo, name: str, what: str) -> list[str]:
        if name.startswith("/"):
            self._refuse(member, f"has an absolute path as {what}")
        parts = [part for part in name.split("/") if part not in ("", ".")]
        if ".." in parts:
            self._refuse(member, f"has `..` in {what}, which could lead outside the image")
        return parts

    def _no_symlink_before(self, member: tarfile.TarInfo, parents: list[str]) -> None:
        """Refuse a member whose path goes through a symlink an earlier member made: writing
        through it could land anywhere on the host."""
        for depth in range(1, len(parents) + 1):
            try:
                mode = os.lstat(os.path.join(self.dest, *parents[:depth])).st_mode
            except FileNotFoundError:
                return  # tarfile creates the rest as plain directories
            where = "/".join(parents[:depth])
            if stat.S_ISLNK(mode):
                self._refuse(member, f"would be written through the symlink {where}")
            if not stat.S_ISDIR(mode):
                self._refuse(member, f"would be written under {where}, which is not a directory")

    def _hardlink_target(self, member: tarfile.TarInfo) -> str:
        parts = self._parts(member, member.linkname, "its hard link target")
        self._no_symlink_before(member, parts[:-1])
        target = "/".join(parts)
        try:
            mode = os.lstat(os.path.join(self.dest, *parts)).st_mode if parts else 0
        except FileNotFoundError:
            mode = 0
        # link(2) follows a symlink, and a directory cannot be linked: only files are safe.
        if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            self._refuse(member, f"is a hard link to {target!r}, not a file earlier in the archive")
        return target

    def _clear(self, member: tarfile.TarInfo, target: str) -> None:
        """A later member replaces an earlier one, as GNU tar does; removing it first means
        nothing is ever written through an existing symlink or into a shared hard link."""
        try:
            mode = os.lstat(target).st_mode
        except FileNotFoundError:
            return
        if stat.S_ISDIR(mode):
            if not member.isdir():
                self._refuse(member, "would replace a directory of an earlier member")
            return
        os.unlink(target)

    def _refuse(self, member: tarfile.TarInfo, why: str) -> NoReturn:
        raise ImageError(
            self.name, self.path, f"{self.archive}: member {member.name!r} {why}; nothing imported"
        )
