"""The state store under --root: one 0700 directory per container id, holding `state.json`
(written atomically), `exec.fifo` (the gate the init waits at until `start`), the empty `rootfs`
stage directory, and `lock` (flock, held by each verb that changes the container).

The root is root's alone (0700): the state and the FIFO say where a container's root is and let
anyone who opens the FIFO start it."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import NamedTuple

from sandman.atomic_json import write_atomically
from sandman.oci.errors import OciError, not_found

DEFAULT_ROOT = "/run/sandman-oci"
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]{0,1023}$")


class Stored(NamedTuple):
    """What `create` records and the other verbs read (a NamedTuple, not a dataclass: every
    verb loads one, and dataclasses' import, with inspect, is a tenth of a `state` call)."""

    id: str
    pid: int
    pid_start: int  # the init's start time in clock ticks (/proc/PID/stat): a reused PID differs
    bundle: str
    created: str  # RFC 3339 with nanoseconds
    cgroup: str | None = None  # relative to the cgroup root; None: the caller's cgroup is kept
    annotations: Mapping[str, str] = MappingProxyType({})
    hooks: Mapping[str, list[dict[str, object]]] = MappingProxyType({})
    started: bool = False


def check_id(container_id: str) -> str:
    if not _ID.match(container_id):
        raise OciError(
            f"invalid container id {container_id!r}: use letters, digits and _ . + - "
            "(not first), at most 1024 characters"
        )
    return container_id


class Store:
    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def directory(self, container_id: str) -> str:
        return os.path.join(self.root, check_id(container_id))

    def make(self, container_id: str) -> str:
        """The container's new directory; an error if the id is taken."""
        os.makedirs(self.root, mode=0o700, exist_ok=True)
        os.chmod(self.root, 0o700)
        directory = self.directory(container_id)
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:
            raise OciError(f"container {container_id!r} already exists") from None
        return directory

    def load(self, container_id: str) -> Stored:
        path = os.path.join(self.directory(container_id), "state.json")
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except FileNotFoundError:
            raise not_found(container_id) from None
        return Stored(**data)

    def save(self, stored: Stored) -> None:
        write_atomically(os.path.join(self.directory(stored.id), "state.json"), _plain(stored))

    def remove(self, container_id: str) -> None:
        """The container's directory, once its stage holds nothing: an OciError, and the
        directory left, if the root mounted on it cannot be let go (the walk that removes the
        directory would otherwise go down into the bundle's files and delete them)."""
        directory = self.directory(container_id)
        stage = os.path.join(directory, "rootfs")
        try:
            os.rmdir(stage)  # empty: the root was mounted in the init's namespace only
        except FileNotFoundError:
            pass
        except OSError:
            _release_stage(stage)  # mounted in the caller's namespace (a config without one)
        import shutil  # here: its bz2 and lzma imports cost every other verb 3 ms

        shutil.rmtree(directory, ignore_errors=True)

    def ids(self) -> list[str]:
        try:
            return sorted(os.listdir(self.root))
        except FileNotFoundError:
            return []

    @contextlib.contextmanager
    def locked(self, container_id: str) -> Iterator[None]:
        path = os.path.join(self.directory(container_id), "lock")
        flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            fd = os.open(path, flags, 0o600)
        except FileNotFoundError:
            raise not_found(container_id) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _plain(stored: Stored) -> dict[str, object]:
    """The record as JSON-ready data (its mappings as dicts)."""
    data: dict[str, object] = stored._asdict()
    data["annotations"], data["hooks"] = dict(stored.annotations), dict(stored.hooks)
    return data


def _release_stage(stage: str) -> None:
    """Detach the root mounted on `stage` and every mount below it (a config without a mount
    namespace had them made in the caller's), then remove the directory."""
    from sandman.kernel import syscalls as sc  # here: ctypes is for this rare case alone

    for _ in range(_MOUNTS_STACKED):
        try:
            sc.umount2(stage, sc.MNT_DETACH | sc.UMOUNT_NOFOLLOW)
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: no mount is left there
                raise OciError(f"{stage}: cannot unmount the container's root: {exc}") from None
            break
    try:
        os.rmdir(stage)
    except OSError as exc:
        raise OciError(
            f"{stage}: the container's root stage is not empty once unmounted ({exc.strerror}); "
            "its directory is left for you to look at"
        ) from None


# How many mounts may lie on top of each other on the stage: the root, and a bind of it that a
# process with the mount rights of the caller's namespace may have added.
_MOUNTS_STACKED = 16
