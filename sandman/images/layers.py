"""Layers of a container image applied one over the other, as the OCI image spec's changesets
say: a later layer's file replaces an earlier one (a directory too), `DIR/.wh.NAME` deletes
NAME of the layers below, and `DIR/.wh..wh..opq` hides everything the layers below put in DIR.

A whiteout hides only what lower layers made: files of its own layer stay, whatever their order
in the tar (the spec's rule; the set of paths a layer wrote so far says which are its own). Nor
is a directory holding this layer's files removed or replaced: a whiteout of it hides what lower
layers put in it, and a member replacing it is refused. That is also what keeps the layer's
writes beneath the image: tarfile sets a directory's owner, mode and times once the whole layer
is written, through its path, following symlinks; were a directory of the layer swapped for a
symlink (`a/etc` written, then `a -> /`), it would chmod and chown the host's /etc. Every
member that is written goes through tarball.MemberChecker's checks, and a whiteout's own path is
checked the same way (no `..`, nothing through a symlink), so a layer can delete only inside
the image being built.
"""

from __future__ import annotations

import os
import shutil
import stat
import tarfile

from sandman.images.tarball import MemberChecker

WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"
# aufs's own bookkeeping (`.wh..wh.plnk`, `.wh..wh.aufs`): no file of the image.
_AUFS_META = ".wh..wh."


class LayerChecker(MemberChecker):
    """A MemberChecker for the layers of one image, fed one layer after the other."""

    written: set[str]  # the paths this layer wrote
    holding: set[str]  # the directories above them

    def start_layer(self, label: str) -> None:
        """The next members are LABEL's (errors name it)."""
        self.archive = label
        self.written = set()
        self.holding = set()

    def _admit(self, member: tarfile.TarInfo) -> bool:
        parts = self._parts(member, member.name, "its name")
        base = parts[-1] if parts else ""
        if base.startswith(WHITEOUT):
            self._charge(member)
            self._no_symlink_before(member, parts[:-1])
            if base == OPAQUE:
                self._opaque(member, parts[:-1])
            elif not base.startswith(_AUFS_META):
                self._whiteout(member, [*parts[:-1], base[len(WHITEOUT) :]])
            return False
        admitted = super()._admit(member)
        if admitted:
            self.written.add("/".join(parts))
            self.holding.update("/".join(parts[:depth]) for depth in range(len(parts)))
        return admitted

    def _clear(self, member: tarfile.TarInfo, target: str) -> None:
        """A file of a later layer replaces a directory of the layers below, with all it holds."""
        rel = os.path.relpath(target, self.dest)
        replaced = os.path.isdir(target) and not os.path.islink(target)
        if replaced and not member.isdir() and rel in self.holding:
            self._refuse(member, "would replace a directory holding files of its own layer")
        if replaced and not member.isdir() and rel not in self.written:
            self._remove(rel.split(os.sep))
            return
        super()._clear(member, target)

    def _whiteout(self, member: tarfile.TarInfo, parts: list[str]) -> None:
        if parts[-1] in ("", ".", ".."):
            self._refuse(member, "is a whiteout of no file")
        path = "/".join(parts)
        if path not in self.holding and path not in self.written:
            self._remove(parts)
        elif _is_dir(os.path.join(self.dest, *parts)):
            self._prune(parts)  # what lower layers put there goes; this layer's own stays

    def _opaque(self, member: tarfile.TarInfo, parts: list[str]) -> None:
        top = os.path.join(self.dest, *parts)
        if not os.path.lexists(top):
            return
        if not _is_dir(top):
            self._refuse(member, "makes opaque what is not a directory")
        self._prune(parts)

    def _remove(self, parts: list[str]) -> None:
        """Remove what PARTS names, with all it holds, and forget the extended attributes
        noted for it: set at the end, they would go wherever the path leads by then (a symlink
        a later layer put in its place, to a host file)."""
        _remove(os.path.join(self.dest, *parts))
        path = "/".join(parts)
        for name in [n for n in self.xattrs if n == path or n.startswith(path + "/")]:
            del self.xattrs[name]

    def _prune(self, parts: list[str]) -> None:
        """Remove what the layers below put under PARTS; keep this layer's own, pruned too."""
        directory = os.path.join(self.dest, *parts)
        with os.scandir(directory) as entries:
            found = [(entry.name, entry.is_dir(follow_symlinks=False)) for entry in entries]
        for name, is_dir in found:
            path = "/".join([*parts, name])
            if path not in self.written and path not in self.holding:
                self._remove([*parts, name])
            elif is_dir:
                self._prune([*parts, name])


def _is_dir(path: str) -> bool:
    """Whether PATH is a directory itself, not a symlink to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _remove(path: str) -> None:
    """Remove PATH, a directory with all it holds; never through a symlink (rmtree opens each
    directory with O_NOFOLLOW and removes a symlink as a file)."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        shutil.rmtree(path)
    else:
        os.unlink(path)
