"""The unit cache: the resolved desired state of a unit directory, kept as its canonical forms
(units/desired.Canonicals) under the state dir, so that a no-op `apply` and a repeated
`validate` need not parse, validate (pydantic) and resolve units they resolved before.

A hit must give exactly what loading the units would, so the key hashes everything the result
depends on, read afresh at every run (never mtimes: an edit that keeps them is still seen):
the directory as given and every entry of it (names: added, removed and renamed files, and the
loader's warnings), the bytes of every unit file, the instance tag, the addresses `auto` keeps
(`sticky`), and the source of the code that resolves (sandman's unit modules and the pydantic
release). The image configs a resolution read (units/image_defaults.py) are kept in the entry
with what they said, each read again and compared on a lookup. Only a load without problems
is stored.

The entry is the state dir's, root's alone (or, for a validate with a state dir of a user's
own, that user's): read through an fd (O_NOFOLLOW) only if it and its dir are owned by this user
and closed to others, so no other local user can plant one; anything
unreadable, foreign, of another version or key is a miss, never an error. Imports only the
standard library's light modules: the no-op `apply` passes through here.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sandman.hashing import sha256
from sandman.units import snapshot
from sandman.units.canonicals import Canonical, Canonicals
from sandman.units.snapshot import Snapshot

CACHE_VERSION = 1
_MAX_ENTRY_BYTES = 64 * 1024 * 1024
_KINDS = ("sandbox", "network", "slice")
# The modules outside sandman/units/ whose code decides what units resolve to.
_CODE = (
    "booting.py",
    "capabilities.py",
    "digest.py",
    "errors.py",
    "signals.py",
    "syscall_table.py",
)

if TYPE_CHECKING:  # these load only when units are loaded
    from sandman.images.config import ImageConfig
    from sandman.units.desired import Desired

Sticky = Mapping[str, tuple[str | None, str | None]]


class UnitCache:
    """The cache entry of one unit directory, as one run (apply, plan or validate) sees it."""

    def __init__(
        self, state_dir: str, image_dir: str, directory: str, tag: str, sticky: Sticky | None
    ):
        self.image_dir = image_dir
        self.images_read: dict[str, str | None] = {}  # image name -> its config file's hash
        self._configs: dict[str, ImageConfig | None] = {}
        self.directory = directory_of(state_dir)
        slot = f"{os.path.abspath(directory)}\0{'sticky' if sticky is not None else 'free'}"
        # JSON, but not named `.json`: nothing that reads the state dir's records takes it for one
        self._name = f"units-{sha256(slot.encode()).hexdigest()[:16]}.cache"
        self.snapshot = snapshot.take(directory)
        self.key = (
            None
            if self.snapshot is None
            else _key(self.snapshot, directory, tag, image_dir, sticky)
        )

    def images(self, name: str) -> ImageConfig | None:
        """The image config the loader asks for, from the bytes whose hash the entry keeps: an
        entry holds what the config said when it was read (image_defaults)."""
        from sandman.images.config import config_of

        if name not in self._configs:
            data = _config_bytes(self.image_dir, name)
            self.images_read[name] = _hash_of(data)
            self._configs[name] = None if data is None else config_of(data)
        return self._configs[name]

    def lookup(self) -> Canonicals | None:
        if self.key is None:
            return None
        entry = _read_entry(self.directory, self._name)
        if entry is None or entry.get("version") != CACHE_VERSION or entry.get("key") != self.key:
            return None
        try:
            images = entry["images"]
            for name, said in images.items():
                if _hash_of(_config_bytes(self.image_dir, name)) != said:
                    return None
            return _canonicals(entry)
        except (KeyError, TypeError, ValueError, AttributeError):
            return None  # a damaged entry is a miss

    def store(self, desired: Desired) -> None:
        """Keep DESIRED (loaded without problems) for the next run; a failure only costs a miss."""
        if self.key is None:
            return
        view = desired.canonicals()
        entry = {
            "version": CACHE_VERSION,
            "key": self.key,
            "images": self.images_read,
            "tag": view.tag,
            "warnings": list(view.warnings),
            "objects": {
                kind: {n: {"file": c.file, "form": c.form} for n, c in view.of_kind(kind).items()}
                for kind in _KINDS
            },
        }
        # A read-only or full state dir only means the next run loads the units again.
        with contextlib.suppress(OSError):
            _write_entry(self.directory, self._name, entry)


def directory_of(state_dir: str) -> str:
    """The state dir's cache dir: the unit cache's entries and the kept validators."""
    return os.path.join(state_dir, "cache")


def _key(
    snapshot: Snapshot, directory: str, tag: str, image_dir: str, sticky: Sticky | None
) -> str:
    """The hash of the directory's entries and unit files and of what else resolution reads."""
    hashed = sha256()

    def add(*parts: str | bytes) -> None:
        for part in parts:
            data = part.encode("utf-8", "surrogateescape") if isinstance(part, str) else part
            hashed.update(len(data).to_bytes(8, "little"))
            hashed.update(data)

    add(str(CACHE_VERSION), code_hash(), directory, tag, os.path.abspath(image_dir))
    # A sandbox kept without addresses resolves as one not kept (addresses.Allocator._keep):
    # leaving those out, the apply after the one that made sandboxes without a network hits.
    kept = sorted((name, list(pair)) for name, pair in (sticky or {}).items() if any(pair))
    add(json.dumps(kept))
    for entry in snapshot.entries:
        add(entry)
        if entry in snapshot.files:
            add(b"file", snapshot.files[entry])
    return hashed.hexdigest()


def _config_bytes(image_dir: str, name: str) -> bytes | None:
    """An image's config sidecar as images/config.config_path names it (a test checks that it
    is the same file); None if there is none or it cannot be read."""
    try:
        with open(os.path.join(os.path.abspath(image_dir), f".{name}.config.json"), "rb") as file:
            return file.read()
    except OSError:
        return None


def _hash_of(data: bytes | None) -> str | None:
    return None if data is None else sha256(data).hexdigest()


@functools.cache
def code_hash() -> str:
    """The source of what turns unit files into canonical forms, and the pydantic release."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    units = os.path.join(package, "units")
    files = [os.path.join(units, n) for n in sorted(os.listdir(units)) if n.endswith(".py")]
    files += [os.path.join(package, n) for n in _CODE]
    files.append(os.path.join(package, "images", "config.py"))
    hashed = sha256(_pydantic_release().encode())
    for path in files:
        with open(path, "rb") as handle:
            hashed.update(sha256(handle.read()).digest())
    return hashed.hexdigest()


def _pydantic_release() -> str:
    """pydantic's version file, found as the import system would find the package (without
    importing it, or importlib.util: 4 ms of a cached validate); pydantic pins pydantic-core."""
    import sys

    for entry in sys.path:
        try:
            with open(os.path.join(entry or ".", "pydantic", "version.py"), "rb") as handle:
                return sha256(handle.read()).hexdigest()
        except OSError:
            continue
    return "none"


def _private(info: os.stat_result) -> bool:
    """Owned by this user and closed to group and others: no one else can have written it."""
    return info.st_uid == os.geteuid() and not stat.S_IMODE(info.st_mode) & 0o077


def _read_entry(directory: str, name: str) -> dict[str, Any] | None:
    data = read_private(directory, name)
    try:
        entry = None if data is None else json.loads(data)
    except ValueError:
        return None
    return entry if isinstance(entry, dict) else None


def read_private(directory: str, name: str) -> bytes | None:
    """DIRECTORY/NAME's bytes if both are this user's alone (never through a symlink), else None."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW
    try:
        dir_fd = os.open(directory, flags | os.O_DIRECTORY)
    except OSError:
        return None
    try:
        if not _private(os.fstat(dir_fd)):
            return None
        fd = os.open(name, flags | os.O_NONBLOCK, dir_fd=dir_fd)
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode) or not _private(info):
                return None
            if info.st_size > _MAX_ENTRY_BYTES:
                return None
            return handle.read()
    except OSError:
        return None
    finally:
        os.close(dir_fd)


def _write_entry(directory: str, name: str, entry: dict[str, Any]) -> None:
    write_private(directory, name, json.dumps(entry, separators=(",", ":")).encode())


def write_private(directory: str, name: str, data: bytes) -> None:
    """Into a temporary file of this process's own (0600, never through a symlink), renamed over
    the entry: a reader sees the old entry or the new one. Not fsynced: a torn entry is a miss."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(directory, 0o700)
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_DIRECTORY
    dir_fd = os.open(directory, flags)
    try:
        if not _private(os.fstat(dir_fd)):
            return  # not ours to write in, and never read
        temporary = f".{name}.{os.getpid()}.tmp"
        write = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        fd = os.open(temporary, write, 0o600, dir_fd=dir_fd)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(temporary, name, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
        except BaseException:
            os.unlink(temporary, dir_fd=dir_fd)
            raise
    finally:
        os.close(dir_fd)


def _canonicals(entry: Mapping[str, Any]) -> Canonicals:
    objects = entry["objects"]

    def of(kind: str) -> dict[str, Canonical]:
        return {
            str(name): Canonical(str(item["file"]), dict(item["form"]))
            for name, item in objects[kind].items()
        }

    return Canonicals(
        str(entry["tag"]),
        sandboxes=of("sandbox"),
        networks=of("network"),
        slices=of("slice"),
        warnings=tuple(str(w) for w in entry["warnings"]),
    )
