"""Host id ranges for `idmap.auto` (and for user namespaces with no [idmap]): 65536 ids each,
never overlapping a declared range or another sandbox's, and kept across applies."""

from __future__ import annotations

from collections.abc import Iterable

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


def allocate(taken: Iterable[tuple[int, int]]) -> int:
    """The lowest AUTO_SIZE-aligned block from AUTO_FIRST that overlaps no (start, count)."""
    spans = sorted(taken)
    start = AUTO_FIRST
    while start + AUTO_SIZE <= ID_LIMIT:
        clash = _overlap(spans, start)
        if clash is None:
            return start
        end = clash[0] + clash[1]
        start = max(start + AUTO_SIZE, -(-end // AUTO_SIZE) * AUTO_SIZE)
    raise ValueError("no free range of 65536 host ids is left")


def _overlap(spans: list[tuple[int, int]], start: int) -> tuple[int, int] | None:
    for span_start, count in spans:
        if span_start < start + AUTO_SIZE and start < span_start + count:
            return span_start, count
    return None
