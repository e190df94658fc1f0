"""Orphans: kernel objects and files that carry this instance's naming but no record owns.

They are what an apply killed at the wrong moment leaves: a cgroup (with an init in it) made
before the sandbox's record was written, a bridge or veth, NAT rules of an object whose record is
gone, a runtime dir, a record's temporary file. Observe finds them; the plan removes them first,
so that what follows (often the create of the same object) starts from a clean host.

Ownership comes from the records alone. Each finder here is pure but for the reads it is given,
so the decisions are tested without a kernel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from sandman.kernel.scope import HOLDER
from sandman.observe import procs
from sandman.observe.facts import (
    ORPHAN_KINDS,
    NetworkDeclared,
    Orphan,
    Record,
    SandboxDeclared,
)

if TYPE_CHECKING:
    from sandman.kernel.cgroup import CgroupDriver
    from sandman.observe.network import NetworkFacts

# Removal order: processes go with their cgroups first, then what they might hold.
KINDS = ORPHAN_KINDS
RECORD_DIRS = ("sandboxes", "networks", "slices")


def find(
    state_dir: str,
    tag: str,
    records: Iterable[Record],
    cgroups: CgroupDriver | None,
    network: NetworkFacts | None,
) -> tuple[Orphan, ...]:
    records = list(records)
    found: list[Orphan] = []
    if cgroups is not None:
        found += cgroup_orphans(cgroups.path(), owned_cgroups(records), children_of(cgroups))
    found += mount_orphans(state_dir, procs.mount_points("self") or ())
    if network is not None:
        found += rule_orphans(tag, records, network.rules)
        found += link_orphans(tag, records, network.links)
    found += path_orphans(state_dir, records)
    return tuple(sorted(found, key=lambda o: (KINDS.index(o.kind), o.name)))


# --- cgroups ------------------------------------------------------------------------------------


def owned_cgroups(records: Iterable[Record]) -> dict[str, bool]:
    """Recorded cgroup -> whether sandman's own cgroups may sit below it (a slice's may; what is
    below a sandbox's is the sandbox's business)."""
    owned: dict[str, bool] = {}
    for record in records:
        cgroup = record.runtime.cgroup
        if cgroup is not None:
            owned[cgroup] = owned.get(cgroup, False) or record.kind == "slice"
    return owned


def cgroup_orphans(
    base: str, owned: dict[str, bool], children: Callable[[str], list[str] | None]
) -> list[Orphan]:
    """The topmost cgroups under `base` that no record owns and that lead to none that is.

    `children(rel)` lists rel's child cgroups in any hierarchy, None when rel exists in none."""
    below = children(base)
    if below is None:
        return []
    if not owned:
        return [Orphan("cgroup", base, "the instance's cgroup, and no record")]
    found: list[Orphan] = []
    # The leaf of the holder that keeps a systemd scope is the scope's, no orphan.
    pending = [f"{base}/{name}" for name in below if name != HOLDER]
    while pending:
        rel = pending.pop()
        if rel in owned and not owned[rel]:
            continue
        if rel in owned or any(o.startswith(rel + "/") for o in owned):
            pending += [f"{rel}/{name}" for name in children(rel) or ()]
        else:
            found.append(Orphan("cgroup", rel, "no record owns it"))
    return found


def children_of(cgroups: CgroupDriver) -> Callable[[str], list[str] | None]:
    def children(rel: str) -> list[str] | None:
        names: set[str] = set()
        seen = False
        for directory in cgroups.locations(rel):
            try:
                with os.scandir(directory) as entries:
                    names |= {e.name for e in entries if e.is_dir(follow_symlinks=False)}
                seen = True
            except FileNotFoundError:
                continue
        return sorted(names) if seen else None

    return children


# --- mounts -------------------------------------------------------------------------------------


def mount_orphans(state_dir: str, mount_points: Iterable[str]) -> list[Orphan]:
    """sandman mounts nothing under its state dir in the host's mount namespace (a sandbox's
    mounts live in its own), so any mount there is a leftover; deepest first, named relative
    to the state dir."""
    inside = [p for p in mount_points if p.startswith(state_dir.rstrip("/") + "/")]
    return [
        Orphan("mount", os.path.relpath(point, state_dir), "a mount under the state dir")
        for point in sorted(inside, key=lambda p: (-p.count("/"), p))
    ]


# --- network ------------------------------------------------------------------------------------


def rule_orphans(tag: str, records: Iterable[Record], rules: Iterable[Any]) -> list[Orphan]:
    """Rules of a network (NAT, forward policy) and of a sandbox (port forwards, source filter)
    that have no record; the whole tables when no network is recorded at all."""
    records = list(records)
    rules = list(rules)
    networks = {r.name for r in records if r.kind == "network"}
    sandboxes = {r.name for r in records if r.kind == "sandbox"}
    if not rules:
        return []
    if not networks:
        return [Orphan("table", f"sandman_{tag}", "the instance's nf_tables table, and no network")]
    found: dict[str, Orphan] = {}
    for rule in rules:
        owner_kind = _OWNER_KINDS.get(rule.kind)
        owners = networks if owner_kind == "network" else sandboxes
        if owner_kind is not None and rule.owner not in owners:
            name = f"{rule.kind} {rule.owner}"
            found[name] = Orphan(
                "rule", name, f"{rule.kind} rules of a {owner_kind} with no record"
            )
    return list(found.values())


# The kind of object that owns each kind of rule (net_facts' KINDS; "base" is the table's own).
_OWNER_KINDS = {"nat": "network", "forward": "network", "port": "sandbox", "antispoof": "sandbox"}


def link_orphans(tag: str, records: Iterable[Record], links: dict[str, Any]) -> list[Orphan]:
    """Bridges named `TAGb-*` and veths named `TAG-*` that no record names."""
    owned = set(owned_links(records))
    found = []
    for name, link in links.items():
        if name in owned:
            continue
        if (name.startswith(f"{tag}b-") and link.kind == "bridge") or (
            name.startswith(f"{tag}-") and link.kind == "veth"
        ):
            found.append(Orphan("link", name, f"a {link.kind} with no record"))
    return found


def owned_links(records: Iterable[Record]) -> Iterator[str]:
    """The links records name: sandboxes' veths, networks' bridges."""
    for record in records:
        declared = record.declared
        named = declared.veth if isinstance(declared, SandboxDeclared) else None
        if isinstance(declared, NetworkDeclared):
            named = declared.bridge
        for value in (named, record.runtime.bridge):
            if value is not None:
                yield value


# --- files --------------------------------------------------------------------------------------


def path_orphans(state_dir: str, records: Iterable[Record]) -> list[Orphan]:
    """Temporary files of records whose write was cut short, and runtime dirs of sandboxes
    with no record; named relative to the state dir."""
    recorded = {(r.kind, r.name) for r in records}
    found = []
    for subdir in RECORD_DIRS:
        directory = os.path.join(state_dir, subdir)
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except FileNotFoundError:
            continue
        for entry in entries:
            name = f"{subdir}/{entry.name}"
            if entry.name.endswith(".json.tmp"):
                found.append(Orphan("path", name, "a record's unfinished write"))
            elif (
                subdir == "sandboxes"
                and entry.is_dir(follow_symlinks=False)
                and ("sandbox", entry.name) not in recorded
            ):
                found.append(Orphan("path", name, "a runtime dir with no record"))
    return found
