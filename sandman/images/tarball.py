"""Extraction of a root filesystem tarball into a staged image, refusing what could escape it.

tarfile's own filters don't fit a rootfs: "data" and "tar" drop setuid bits, sticky bits and
group write (a rootfs needs its `su` and its 1777 /tmp), and Debian 12's Python has no filters at
all. So every member is checked here just before it is written (the checks look at what earlier
members left on disk): no absolute name, no `..`, no path through a symlink, no hard link to
anything but a regular file of the image. Ownership comes from the archive's numbers, not from
the host's user names. Device nodes are skipped: sandman builds each sandbox's /dev itself.

An archive is bounded before a byte of a member is written (a tar bomb, or a small .gz or .xz
that inflates to terabytes): the sum of its files' sizes (as the headers give them, which is
what extraction writes, so compression does not matter) may not pass `Bounds.max_size` nor the
free space of the image dir's file system, and the number of members may not pass
`Bounds.max_files` nor its free inodes. Either is refused with the archive and the limit named,
and the partial image is removed by the caller (store._build).
"""

from __future__ import annotations

import lzma
import os
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, NamedTuple, NoReturn

from sandman.errors import ImageError

if TYPE_CHECKING:
    from _typeshed import StrOrBytesPath as AnyPath

# What a damaged or foreign file raises while being read as a (compressed) tar archive.
DAMAGED = (tarfile.TarError, EOFError, zlib.error, lzma.LZMAError)
_SHOWN = 5  # skipped device nodes named in the note
# GNU tar and bsdtar write a file's extended attributes as pax records of this prefix.
_XATTR_PAX = "SCHILY.xattr."
# File capabilities (ping's cap_net_raw) and POSIX ACLs (journald's on /var/log/journal).
_XATTRS_KEPT = frozenset(
    {"security.capability", "system.posix_acl_access", "system.posix_acl_default"}
)
_USER_XATTRS = "user."
# A default far above any root file system (a Debian with a desktop is under 10G and 300,000
# files), yet a bound: `image import --max-size` and `--max-files` raise it.
DEFAULT_MAX_SIZE = 64 * 1024**3
DEFAULT_MAX_FILES = 1_000_000


class Bounds(NamedTuple):
    """What one import may write: bytes of file content, and members."""

    max_size: int = DEFAULT_MAX_SIZE
    max_files: int = DEFAULT_MAX_FILES


def extract(
    name: str,
    path: str,
    archive: str,
    dest: str,
    report: Callable[[str], None],
    *,
    bounds: Bounds | None = None,
) -> None:
    """Extract ARCHIVE (plain, .gz, .xz or .bz2) into DEST for image NAME at PATH."""
    checker = MemberChecker(name, path, archive, dest, budget_of(dest, bounds))
    try:
        with ExtractingTarFile.open(archive, "r:*", tarinfo=BoundedInfo) as tar:
            write_members(tar, checker)
        checker.set_xattrs()
    except DAMAGED as exc:
        raise ImageError(
            name, path, f"{archive} is not a readable tar archive (plain, .gz, .xz, .bz2): {exc}"
        ) from exc
    report_skipped(checker, report)
    report(f"extracted {checker.count} entries from {archive}")


def budget_of(dest: str, bounds: Bounds | None) -> _Budget:
    return _Budget.of(dest, bounds or Bounds())


def write_members(tar: ExtractingTarFile, checker: MemberChecker) -> None:
    """Write TAR's members into the checker's DEST, each admitted by it first."""
    tar.checker = checker
    # Where tarfile has filters, "fully_trusted" keeps modes as they are (the checks are ours);
    # without it, Python 3.14 would apply the "data" filter.
    options: dict[str, Any] = {"numeric_owner": True}
    if hasattr(tarfile, "fully_trusted_filter"):
        options["filter"] = "fully_trusted"
    tar.extractall(checker.dest, members=checker.members(tar), **options)


def report_skipped(checker: MemberChecker, report: Callable[[str], None]) -> None:
    if checker.xattrs_dropped:
        dropped = ", ".join(sorted(checker.xattrs_dropped)[:_SHOWN])
        report(f"dropped extended attributes a sandbox has no use for: {dropped}")
    if checker.skipped:
        shown = ", ".join(checker.skipped[:_SHOWN]) + (
            ", …" if len(checker.skipped) > _SHOWN else ""
        )
        report(
            f"skipped {len(checker.skipped)} device node(s) ({shown}): sandboxes get their own /dev"
        )


# Extended headers (pax records, GNU long names) are read whole into memory by tarfile before the
# member is seen; a real one is a few kilobytes (xattrs are at most 64K on ext4).
_HEADER_MAX = 16 * 1024**2
_EXTENDED = (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE)


class BoundedInfo(tarfile.TarInfo):
    """A TarInfo that refuses an extended header too large to read into memory."""

    def _proc_member(self, tar: tarfile.TarFile) -> tarfile.TarInfo:
        if self.type in _EXTENDED and self.size > _HEADER_MAX:
            raise tarfile.HeaderError(
                f"an extended header of {_human(self.size)} (at most {_human(_HEADER_MAX)})"
            )
        result: tarfile.TarInfo = super()._proc_member(tar)  # type: ignore[misc]
        return result


class ExtractingTarFile(tarfile.TarFile):
    """A TarFile that sets no directory's owner, mode or times through a symlink. tarfile sets
    them once every member is written, through the directory's path, following symlinks: the
    checker keeps symlinks out of that path (no member replaces a directory holding members
    written after it); this refuses the import should one ever be there all the same."""

    checker: MemberChecker | None = None

    def chown(self, tarinfo: tarfile.TarInfo, targetpath: AnyPath, numeric_owner: bool) -> None:
        self._no_symlink_to(tarinfo, targetpath)
        super().chown(tarinfo, targetpath, numeric_owner)

    def chmod(self, tarinfo: tarfile.TarInfo, targetpath: AnyPath) -> None:
        self._no_symlink_to(tarinfo, targetpath)
        super().chmod(tarinfo, targetpath)

    def utime(self, tarinfo: tarfile.TarInfo, targetpath: AnyPath) -> None:
        self._no_symlink_to(tarinfo, targetpath)
        super().utime(tarinfo, targetpath)

    def _no_symlink_to(self, tarinfo: tarfile.TarInfo, targetpath: AnyPath) -> None:
        if self.checker is None or not tarinfo.isdir():
            return  # a file's are set as it is written, just after the checks
        rel = os.path.relpath(os.fsdecode(targetpath), self.checker.dest)
        parts = [part for part in rel.split(os.sep) if part not in ("", ".")]
        for depth in range(1, len(parts) + 1):
            if os.path.islink(os.path.join(self.checker.dest, *parts[:depth])):
                where = "/".join(parts[:depth])
                self.checker.refuse(tarinfo, f"would have its mode set through the symlink {where}")


class _Budget(NamedTuple):
    """The bounds of one import, with the room on the file system it writes to."""

    bounds: Bounds
    free_bytes: int | None  # None: the file system does not say (f_blocks 0)
    free_inodes: int | None  # None: it does not count inodes (btrfs says 0)

    @classmethod
    def of(cls, dest: str, bounds: Bounds) -> _Budget:
        room = os.statvfs(dest)
        # f_bavail and f_favail leave the blocks and inodes reserved for the host's root alone.
        free_bytes = room.f_bavail * room.f_frsize if room.f_blocks else None
        free_inodes = room.f_favail if room.f_files else None
        return cls(bounds, free_bytes, free_inodes)

    def problem(self, size: int, count: int) -> str | None:
        """Why SIZE bytes in COUNT members are too much, or None."""
        if size > self.bounds.max_size:
            return (
                f"its files hold more than {_human(self.bounds.max_size)} (the --max-size "
                "limit); if the image is meant to be that large, import it with a larger "
                "--max-size"
            )
        if count > self.bounds.max_files:
            return (
                f"it has more than {self.bounds.max_files} members (the --max-files limit); if "
                "the image is meant to be that large, import it with a larger --max-files"
            )
        if self.free_bytes is not None and size > self.free_bytes:
            return f"its files hold more than the {_human(self.free_bytes)} free in the image dir"
        if self.free_inodes is not None and count > self.free_inodes:
            return f"it has more members than the {self.free_inodes} free inodes of the image dir"
        return None


def _human(size: int) -> str:
    for suffix, factor in (("T", 1024**4), ("G", 1024**3), ("M", 1024**2), ("K", 1024)):
        if size >= factor:
            return f"{size / factor:.4g}{suffix}"
    return f"{size} bytes"


class MemberChecker:
    """Admits each member of one archive (or of each layer in turn) just before it is written."""

    def __init__(self, name: str, path: str, archive: str, dest: str, budget: _Budget) -> None:
        self.name = name
        self.path = path
        self.archive = archive
        self.dest = dest
        self.budget = budget
        self.skipped: list[str] = []
        self.count = 0
        self.size = 0
        # Extended attributes by member path, set once every member is written (tarfile sets
        # none): the last member of a path wins, as its file does.
        self.xattrs: dict[str, dict[str, bytes]] = {}
        self.xattrs_dropped: set[str] = set()

    def members(self, tar: tarfile.TarFile) -> Iterator[tarfile.TarInfo]:
        # A generator: extractall writes each member before asking for the next, so each check
        # sees the tree as the earlier members made it.
        for member in tar:
            if self._admit(member):
                yield member

    def _admit(self, member: tarfile.TarInfo) -> bool:
        self._charge(member)
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
        self._note_xattrs(member)
        self.count += 1
        return True

    def _note_xattrs(self, member: tarfile.TarInfo) -> None:
        """Keep the member's pax SCHILY.xattr records that a root file system needs (file
        capabilities, ACLs, user attributes); others (SELinux labels of the machine that made
        the archive, trusted.*) are dropped and named."""
        found = {}
        for key, value in member.pax_headers.items():
            if not key.startswith(_XATTR_PAX):
                continue
            name = key[len(_XATTR_PAX) :]
            if name in _XATTRS_KEPT or name.startswith(_USER_XATTRS):
                found[name] = value.encode("utf-8", "surrogateescape")
            else:
                self.xattrs_dropped.add(name)
        if found and not member.issym():
            self.xattrs[member.name] = found
        else:
            self.xattrs.pop(member.name, None)

    def set_xattrs(self) -> None:
        """Set the kept attributes on what the members wrote (never through a symlink)."""
        for name, attributes in self.xattrs.items():
            path = os.path.join(self.dest, name)
            self._no_symlink_above(name)
            for key, value in attributes.items():
                try:
                    os.setxattr(path, key, value, follow_symlinks=False)
                except FileNotFoundError:
                    break  # a later layer's whiteout removed it
                except OSError as exc:
                    self._refuse_xattr(name, key, exc)

    def _no_symlink_above(self, name: str) -> None:
        """Refuse to set NAME's attributes through a symlink in its path (a layer's removals
        forget the attributes of what they remove: this is a second guard)."""
        parts = name.split("/")
        for depth in range(1, len(parts)):
            if os.path.islink(os.path.join(self.dest, *parts[:depth])):
                where = "/".join(parts[:depth])
                raise ImageError(
                    self.name,
                    self.path,
                    f"{self.archive}: would set the extended attributes of {name!r} through the "
                    f"symlink {where}; nothing imported",
                )

    def _refuse_xattr(self, name: str, key: str, exc: OSError) -> NoReturn:
        raise ImageError(
            self.name,
            self.path,
            f"{self.archive}: cannot set {key} on {name!r} ({exc.strerror}); nothing imported",
        )

    def _charge(self, member: tarfile.TarInfo) -> None:
        """Count the member against the bounds before it is written: a regular file writes its
        header's size (a hard link, a directory or a symlink no content)."""
        if member.isreg():
            self.size += member.size
        problem = self.budget.problem(self.size, self.count + 1)
        if problem:
            raise ImageError(
                self.name,
                self.path,
                f"{self.archive}: refused at member {member.name!r}: {problem}; nothing imported",
            )

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

    def refuse(self, member: tarfile.TarInfo, why: str) -> NoReturn:
        """Refuse the import at MEMBER, saying WHY."""
        self._refuse(member, why)

    def _refuse(self, member: tarfile.TarInfo, why: str) -> NoReturn:
        raise ImageError(
            self.name, self.path, f"{self.archive}: member {member.name!r} {why}; nothing imported"
        )
