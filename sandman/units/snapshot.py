"""A unit directory read once: its entries and its unit files' bytes. The unit cache hashes it
and the loader loads it, so an entry of the cache holds what its key says, even when a file
changes while a run loads it. Standard library only: the no-op `apply` reads through here."""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
import os
from typing import BinaryIO, NamedTuple

MAX_UNIT_BYTES = 1024 * 1024  # the loader's limit: a bigger file is refused, never cached


class Snapshot(NamedTuple):
    entries: tuple[str, ...]  # every name in the directory, sorted
    files: dict[str, bytes]  # NAME.KIND.toml (and any other `.toml` the loader reads) -> bytes


def is_unit_file(entry: str) -> bool:
    """What the loader reads of a directory (units/load.py)."""
    return entry.endswith(".toml") and not entry.startswith(".")


def take(directory: str) -> Snapshot | None:
    """The directory's entries and unit files; None when one cannot be read or is too big (the
    loader reads the directory itself then, and says what is wrong)."""
    try:
        entries = tuple(sorted(os.listdir(directory)))
        files = {}
        for entry in entries:
            if is_unit_file(entry):
                with open(os.path.join(directory, entry), "rb") as handle:
                    data = read_bounded(handle)
                if len(data) > MAX_UNIT_BYTES:
                    return None
                files[entry] = data
    except OSError:
        return None
    return Snapshot(entries, files)


def read_bounded(handle: BinaryIO) -> bytes:
    """The file's bytes, up to MAX_UNIT_BYTES + 1 (one more says it is too big), read in chunks.
    Not in one read of the limit: Python makes that read's buffer at the limit's size, glibc maps
    a buffer that big on its own and, shrinking it to the file, keeps it as a mapping of its own,
    a page each: the bytes kept of 1000 units were 1000 mappings, which every fork of apply then
    copied (0.5 ms a fork at 100 units, 2 ms at 1000)."""
    chunks, total = [], 0
    while total <= MAX_UNIT_BYTES:
        chunk = handle.read(min(_CHUNK, MAX_UNIT_BYTES + 1 - total))
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)


_CHUNK = 64 * 1024  # below glibc's threshold for a mapping of its own (128 KiB)
