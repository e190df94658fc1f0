"""A copy of a directory tree as an image: modes, ownership, times, extended attributes (file
capabilities such as ping's), symlinks as symlinks, hard links as hard links.

The source may belong to a local user who changes it while root copies it: swapping a
subdirectory with a symlink to /etc (renameat2 RENAME_EXCHANGE in a loop) would make a copy by
path read /etc/shadow under the user's own file name. So no path is resolved from the source's
root again after it is opened, as runc and nspawn walk untrusted trees: each entry is opened
relative to its parent's fd with O_NOFOLLOW, checked to be the inode listed (fstat on that fd),
and read, listed and measured through the fd; an entry that changed between listing and opening
stops the import. The destination, a fresh dir of root's, is written the same way (mkdirat,
openat with O_EXCL|O_NOFOLLOW, fchown, fchmod, futimens). Symlinks are copied as their text, never
followed; device nodes and sockets are skipped (sandman builds each sandbox's /dev, and a socket
belongs to a running process).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from sandman.errors import ImageError

_SHOWN = 5  # skipped entries named in the note
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO must not wait for a writer; O_NOCTTY: never a controlling tty.
_ENTRY = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20
# What opening an entry that was swapped or removed after it was listed fails with.
_GONE = (errno.ENOENT, errno.ELOOP, errno.ENOTDIR, errno.EINVAL, errno.ENXIO)
# Attributes a file system or the kernel does not take: skipped, as shutil.copystat skips them.
_XATTR_SKIPPED = (errno.EPERM, errno.ENOTSUP, errno.ENODATA, errno.EINVAL, errno.EACCES)


class _ChangedError(Exception):
    """An entry of the source was replaced or removed while the copy was reading it."""

    def __init__(self, relative: str) -> None:
        super().__init__(relative)
        self.relative = relative


def copy_tree(name: str, path: str, source: str, dest: str, report: Callable[[str], None]) -> None:
    """Copy the contents of SOURCE into DEST, an existing empty directory, for image NAME at
    PATH; a SOURCE that holds DEST's parent (the image dir) is refused, it would copy itself."""
    image_dir = os.stat(os.path.dirname(dest))
    src = os.open(source, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # the one path resolved
    try:
        dst = os.open(dest, _DIR)
        copier = _Copier(dst, image_dir)
        try:
            copier.run(src)
        finally:
            os.close(dst)
    except _ChangedError as exc:
        where = os.path.join(source, exc.relative)
        raise ImageError(
            name,
            path,
            f"`{where}` changed while being copied; nothing imported (copy a tree "
            "nobody changes meanwhile)",
        ) from None
    except _InsideError:
        raise ImageError(
            name, path, f"{source} contains the image dir; it cannot be copied"
        ) from None
    finally:
        os.close(src)
    if copier.skipped:
        shown = ", ".join(copier.skipped[:_SHOWN]) + (", …" if len(copier.skipped) > _SHOWN else "")
        report(f"skipped {len(copier.skipped)} device node(s) or socket(s) ({shown})")
    report(f"copied {copier.count} entries from {source}")


class _InsideError(Exception):
    """The source holds the image dir: the copy would copy itself."""


@dataclass
class _Frame:
    """A directory being copied: both fds, its path in the tree, and the names left."""

    src: int
    dst: int
    relative: str
    info: os.stat_result
    names: Iterator[str]


class _Copier:
    def __init__(self, dest: int, image_dir: os.stat_result) -> None:
        self.dest = dest  # the staged root, from which hard links name their first copy
        self.image_dir = (image_dir.st_dev, image_dir.st_ino)
        self.linked: dict[tuple[int, int], str] = {}
        self.skipped: list[str] = []
        self.count = 0

    def run(self, src: int) -> None:
        """Depth first with a stack of open dirs (no recursion limit on deep trees); a dir's own
        attributes come after its contents, since filling it changes its mtime and its mode
        may forbid writing."""
        stack = [self._frame(src, self.dest, "")]
        try:
            while stack:
                frame = stack[-1]
                name = next(frame.names, None)
                if name is not None:
                    child = self._entry(frame, name)
                    if child is not None:
                        stack.append(child)
                    continue
                stack.pop()
                try:
                    _attributes(frame.src, frame.dst, frame.info)
                finally:
                    if stack:  # the top fds are the caller's
                        _close(frame)
        finally:
            for frame in stack[1:]:
                _close(frame)

    def _frame(self, src: int, dst: int, relative: str) -> _Frame:
        info = os.fstat(src)
        if (info.st_dev, info.st_ino) == self.image_dir:
            raise _InsideError
        return _Frame(src, dst, relative, info, iter(sorted(os.listdir(src))))

    def _entry(self, frame: _Frame, name: str) -> _Frame | None:
        relative = os.path.join(frame.relative, name)
        try:
            seen = os.stat(name, dir_fd=frame.src, follow_symlinks=False)
        except FileNotFoundError:
            raise _ChangedError(relative) from None
        mode = seen.st_mode
        if stat.S_ISDIR(mode):
            return self._directory(frame, name, relative, seen)
        if not (stat.S_ISLNK(mode) or stat.S_ISREG(mode) or stat.S_ISFIFO(mode)):
            self.skipped.append(relative)
            return None
        key = (seen.st_dev, seen.st_ino)
        if seen.st_nlink > 1 and key in self.linked:
            # The first copy's path names only dirs this copy made: nothing there can be swapped.
            os.link(
                self.linked[key],
                name,
                src_dir_fd=self.dest,
                dst_dir_fd=frame.dst,
                follow_symlinks=False,  # a hard-linked symlink is linked, not what it names
            )
        elif stat.S_ISLNK(mode):
            _symlink(frame, name, relative, seen)
        else:
            _file(frame, name, relative, seen)
        if seen.st_nlink > 1:
            self.linked.setdefault(key, relative)
        self.count += 1
        return None

    def _directory(self, frame: _Frame, name: str, relative: str, seen: os.stat_result) -> _Frame:
        src = _open(frame.src, name, _DIR, relative, seen)
        try:
            # 0700 while filling; the real mode comes last (it may forbid writing).
            os.mkdir(name, 0o700, dir_fd=frame.dst)
            dst = os.open(name, _DIR, dir_fd=frame.dst)
            try:
                child = self._frame(src, dst, relative)
            except BaseException:
                os.close(dst)
                raise
        except BaseException:
            os.close(src)
            raise
        self.count += 1
        return child


def _open(directory: int, name: str, flags: int, relative: str, seen: os.stat_result) -> int:
    """NAME under the fd DIRECTORY, never through a symlink, and only if it is still the inode
    that was listed."""
    try:
        fd = os.open(name, flags, dir_fd=directory)
    except OSError as exc:
        if exc.errno in _GONE:
            raise _ChangedError(relative) from None
        raise
    info = os.fstat(fd)
    if (info.st_dev, info.st_ino) != (seen.st_dev, seen.st_ino):
        os.close(fd)
        raise _ChangedError(relative)
    return fd


def _file(frame: _Frame, name: str, relative: str, seen: os.stat_result) -> None:
    """A regular file or a FIFO: its content (a file's) read from the fd that was checked."""
    src = _open(frame.src, name, _ENTRY, relative, seen)
    try:
        if stat.S_ISREG(seen.st_mode):
            out = os.open(name, _NEW, 0o600, dir_fd=frame.dst)
        else:
            os.mkfifo(name, 0o600, dir_fd=frame.dst)
            out = os.open(name, _ENTRY, dir_fd=frame.dst)
        try:
            if stat.S_ISREG(seen.st_mode):
                _copy_data(src, out)
            _attributes(src, out, os.fstat(src))
        finally:
            os.close(out)
    finally:
        os.close(src)


def _symlink(frame: _Frame, name: str, relative: str, seen: os.stat_result) -> None:
    """A symlink's text, read relative to its parent's fd; its owner, attributes and times set
    with *at calls that do not follow it."""
    try:
        target = os.readlink(name, dir_fd=frame.src)
        again = os.stat(name, dir_fd=frame.src, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in _GONE:
            raise _ChangedError(relative) from None
        raise
    if (again.st_dev, again.st_ino) != (seen.st_dev, seen.st_ino):
        raise _ChangedError(relative)
    os.symlink(target, name, dir_fd=frame.dst)
    if os.geteuid() == 0:
        os.chown(name, seen.st_uid, seen.st_gid, dir_fd=frame.dst, follow_symlinks=False)
    # A symlink has no fd to read attributes through: its parent's fd, by /proc, stands in.
    _copy_xattrs(f"/proc/self/fd/{frame.src}/{name}", f"/proc/self/fd/{frame.dst}/{name}")
    times = (seen.st_atime_ns, seen.st_mtime_ns)
    os.utime(name, ns=times, dir_fd=frame.dst, follow_symlinks=False)


def _copy_data(src: int, out: int) -> None:
    try:
        while os.sendfile(out, src, None, _CHUNK) > 0:
            pass
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOSYS):
            raise
        while chunk := os.read(src, _CHUNK):  # a file system sendfile does not read from
            os.write(out, chunk)


def _attributes(src: int, out: int, info: os.stat_result) -> None:
    """Owner first: chown clears setuid bits and file capabilities; the attributes (a
    security.capability among them), then the mode, then the times."""
    if os.geteuid() == 0:
        os.fchown(out, info.st_uid, info.st_gid)
    _copy_xattrs(src, out)
    os.fchmod(out, stat.S_IMODE(info.st_mode))
    os.utime(out, ns=(info.st_atime_ns, info.st_mtime_ns))


def _copy_xattrs(src: int | str, out: int | str) -> None:
    """Every extended attribute the target takes; a path (a symlink's) is not followed."""
    follow = isinstance(src, int)
    try:
        names = os.listxattr(src, follow_symlinks=follow)
    except OSError as exc:
        if exc.errno in _XATTR_SKIPPED:
            return
        raise
    for attribute in names:
        try:
            value = os.getxattr(src, attribute, follow_symlinks=follow)
            os.setxattr(out, attribute, value, follow_symlinks=follow)
        except OSError as exc:
            if exc.errno not in _XATTR_SKIPPED:
                raise


def _close(frame: _Frame) -> None:
    os.close(frame.src)
    os.close(frame.dst)
