"""Host id ranges for `idmap.auto` (and for user namespaces with no [idmap]): 65536 ids each,
never overlapping a declared range or another sandbox's, and kept across applies."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable

from sandman.atomic_json import write_atomically
from sandman.units.desired import DesiredSandbox

AUTO_FIRST = 0x100000  # above the ranges /etc/subuid hands to the host's users
AUTO_SIZE = 65536
ID_LIMIT = 2**32

Range = tuple[int, int, int]  # inside, outside, count


def declared_ranges(sandbox: DesiredSandbox) -> tuple[tuple[Range, ...], tuple[Range, ...]] | None:
    idmap = sandbox.unit.idmap
    if not sandbox.unit.namespaces.user or idmap is None or idmap.auto:
        return None
    uid = tuple((r.inside, r.outside, r.count) for r in idmap.uid)
    gid = tuple((r.inside, r.outside, r.count) for r in idmap.gid) or uid
    return uid, gid


def allocate(taken: Iterable[tuple[int, int]], lowest: int = AUTO_FIRST) -> int:
    """The lowest AUTO_SIZE-aligned block from AUTO_FIRST that overlaps no (start, count).

    One sweep over the spans in order of their start: each one that reaches into the candidate
    block moves it past the span's end, and the first span that starts beyond the block leaves
    it free. (Rescanning every span for each candidate made an apply of 1000 sandboxes spend two
    minutes here: cubic in their number.) `lowest`, an aligned block known to have only taken
    blocks below it (an apply's previous answer: what it takes stays taken until it ends), starts
    the sweep there, past the spans that end below it."""
    start = max(AUTO_FIRST, lowest)
    for span_start, count in sorted(s for s in taken if s[0] + s[1] > start):
        if span_start >= start + AUTO_SIZE:
            break
        end = span_start + count
        if end > start:
            start = max(start + AUTO_SIZE, -(-end // AUTO_SIZE) * AUTO_SIZE)
    if start + AUTO_SIZE > ID_LIMIT:
        raise ValueError("no free range of 65536 host ids is left")
    return start


# A persistent sandbox's automatic range, kept beside its data: its files belong to those ids,
# so the range must outlive the record (a destroy) and no other sandbox may take it meanwhile.
PINNED = "ids.json"


def read_pinned(persistent_dir: str) -> int | None:
    try:
        with open(os.path.join(persistent_dir, PINNED), encoding="utf-8") as handle:
            start = json.load(handle)["auto_ids"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return start if isinstance(start, int) and AUTO_FIRST <= start < ID_LIMIT else None


def pin(persistent_dir: str, start: int) -> None:
    """Record the range beside the data (written whole, then renamed into place)."""
    if read_pinned(persistent_dir) == start:
        return
    path = os.path.join(persistent_dir, PINNED)
    write_atomically(path, {"auto_ids": start, "size": AUTO_SIZE})


def pinned_ranges(persistent_root: str, but: str) -> list[tuple[int, int]]:
    """The ranges pinned by persistent data under `persistent_root`, but sandbox `but`'s."""
    taken = []
    with contextlib.suppress(OSError):
        for name in os.listdir(persistent_root):
            if name != but:
                start = read_pinned(os.path.join(persistent_root, name))
                if start is not None:
                    taken.append((start, AUTO_SIZE))
    return taken
