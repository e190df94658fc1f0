"""Checks within one unit that involve more than one key, and the cross-unit checks that need
only the units' own keys (no resolution); each names the key to change."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterator

from sandman import booting
from sandman.errors import UnitProblem
from sandman.units.constants import CPU_MAX_MIN, MEMORY_MIN, PIDS_MIN, ROOT_SLICE
from sandman.units.load import UnitFile, UnitSet, network_model, sandbox_model, slice_model
from sandman.units.plain import IdRange, Limits
from sandman.units.scalars import format_size

_MAX_ID_RANGES = 340  # the kernel's limit of lines in uid_map / gid_map since Linux 4.15
_ID_SPACE = 2**32


def check_each(units: UnitSet) -> None:
    for unit in units.sandboxes.values():
        units.problems.extend(_sandbox(unit))
    for unit in units.networks.values():
        units.problems.extend(_network(unit))
    for unit in units.slices.values():
        units.problems.extend(_slice(unit))
    units.problems.extend(_cgroup_clashes(units))


def _cgroup_clashes(units: UnitSet) -> Iterator[UnitProblem]:
    """A cgroup's path is its parent slice's path plus its own name, for a sandbox and a slice
    alike: a sandbox and a slice with the same name and parent would be one cgroup. Applying it
    fails (EBUSY on v2), and the failed sandbox's cleanup then kills and removes the slice's
    cgroup, with every sandbox in it. Reported once, at the sandbox."""
    for name, unit in units.sandboxes.items():
        other = units.slices.get(name)
        parent = sandbox_model(unit).sandbox.slice
        if other is None or slice_model(other).slice.parent != parent:
            continue
        yield unit.problem(
            ("sandbox", "slice"),
            f"puts sandbox {name!r} in slice {parent!r}, the parent of slice {name!r} too "
            f"({other.file}): a sandbox and a slice with the same name and parent are one cgroup",
            f"rename one of them (a unit's name is its file name: {os.path.basename(unit.file)} "
            f"or {os.path.basename(other.file)}), or give them different parents",
        )


def _sandbox(unit: UnitFile) -> Iterator[UnitProblem]:
    model = sandbox_model(unit)
    ns = model.namespaces
    if not ns.mount:
        yield unit.problem(
            ("namespaces", "mount"),
            "cannot be false",
            "sandman pivots into the rootfs, which needs a mount namespace of its own",
        )
    if model.time is not None and not ns.time:
        yield unit.problem(
            ("time",),
            "sets clock offsets but namespaces.time is false",
            "set namespaces.time = true or remove [time]",
        )
    if model.sandbox.hostname is not None and not ns.uts:
        yield unit.problem(
            ("sandbox", "hostname"),
            "is set but namespaces.uts is false",
            "a hostname needs a UTS namespace; set namespaces.uts = true or remove hostname",
        )
    if model.network is not None and not ns.net:
        yield unit.problem(
            ("network",),
            "is declared but namespaces.net is false",
            "a sandbox on a network needs its own net namespace; set namespaces.net = true",
        )
    yield from _boot(unit)
    yield from _rootfs(unit)
    yield from _idmap(unit)
    yield from _mounts(unit)
    yield from _limits(unit, ("resources",), model.resources)
    yield from _syscalls(unit)


def _boot(unit: UnitFile) -> Iterator[UnitProblem]:
    """A sandbox runs its command or boots the image's init, not both and not neither; a booted
    init is root and PID 1, and systemd needs the "os" capabilities and a seccomp profile that
    lets it mount and make its cgroups (the model sets both when the unit says nothing)."""
    model = sandbox_model(unit)
    sandbox = model.sandbox
    if not sandbox.boot:
        return  # a missing command may come from the image's config: resolve.py checks it
    if sandbox.command is not None:
        yield unit.problem(
            ("sandbox", "command"),
            "is set but boot = true runs the image's own init",
            "remove command to boot the image, or remove boot to run the command",
        )
    if not model.namespaces.pid:
        yield unit.problem(
            ("namespaces", "pid"),
            "is false but boot = true needs the init to be PID 1 of its own pid namespace",
            "remove namespaces.pid (it defaults to true) or remove boot",
        )
    if sandbox.user != "0:0":
        yield unit.problem(
            ("sandbox", "user"),
            f"is {sandbox.user!r} but a booted init runs as root (it starts services as users)",
            'remove user, or set it to "0:0"',
        )
    yield from _hidden_by_boot(unit)
    security = model.security
    if security.capabilities == "default":
        yield unit.problem(
            ("security", "capabilities"),
            'is "default", which lacks what a booted init needs (CAP_SYS_ADMIN to mount)',
            'remove it (boot = true defaults to "os") or list the capabilities the init needs',
        )
    if security.seccomp == "default":
        yield unit.problem(
            ("security", "seccomp"),
            'is "default", Docker\'s profile for applications; a booted init needs "os", which '
            "answers what systemd asks as it expects in a container (audit: EAFNOSUPPORT)",
            'remove it (boot = true defaults to "os"), or use "unconfined"',
        )


def _hidden_by_boot(unit: UnitFile) -> Iterator[UnitProblem]:
    """Bind and overlay mounts are made before the booted sandbox's tmpfs (host side first):
    one below /run or /tmp would be hidden under it."""
    tmpfs = {target for target, _, _ in booting.TMPFS}
    for index, mount in enumerate(sandbox_model(unit).mount):
        under = [t for t in tmpfs if mount.target.startswith(t + "/") and mount.target not in tmpfs]
        if under and mount.type in ("bind", "overlay"):
            yield unit.problem(
                ("mount", index, "target"),
                f"{mount.target!r} lies under {max(under)}, a fresh tmpfs of a booted sandbox, "
                "which would hide it",
                f"mount it elsewhere, or declare {max(under)} itself as a tmpfs mount (it then "
                "replaces the booted sandbox's)",
            )


def _rootfs(unit: UnitFile) -> Iterator[UnitProblem]:
    rootfs = sandbox_model(unit).rootfs
    if rootfs.image is not None and rootfs.path is not None:
        yield unit.problem(
            ("rootfs", "path"),
            "is set together with rootfs.image",
            "give either image (a directory under the image dir) or path, not both",
        )
    if rootfs.image is None and rootfs.path is None:
        yield unit.problem(
            ("rootfs",),
            "names no root file system",
            'set image = "busybox" (see `sandman images`) or path = "/some/dir"',
        )
    if rootfs.persistent and rootfs.mode != "overlay":
        yield unit.problem(
            ("rootfs", "persistent"),
            f"has no meaning with mode = {rootfs.mode!r}",
            'only an overlay has an upper layer to keep; set mode = "overlay" or drop persistent',
        )


def _idmap(unit: UnitFile) -> Iterator[UnitProblem]:
    model = sandbox_model(unit)
    idmap = model.idmap
    if idmap is None:
        return
    if not model.namespaces.user:
        yield unit.problem(
            ("idmap",),
            "is declared but namespaces.user is false",
            "id maps need a user namespace; set namespaces.user = true or remove [idmap]",
        )
    if idmap.auto and (idmap.uid or idmap.gid):
        yield unit.problem(
            ("idmap", "auto"),
            "is true but uid or gid ranges are given too",
            "either let sandman pick a range (auto = true) or list the ranges",
        )
        return
    if not idmap.auto and not idmap.uid:
        yield unit.problem(
            ("idmap", "uid"),
            "is empty",
            "list ranges, e.g. uid = [{ inside = 0, "
            "outside = 200000, count = 65536 }], or set auto = true",
        )
        return
    # An absent gid copies uid: checking that copy would report each uid problem twice, and at
    # a key the file does not have.
    for key, ranges in (("uid", idmap.uid), ("gid", idmap.gid)):
        yield from _ranges(unit, key, ranges)
    if not idmap.auto:
        yield from _user_mapped(unit)


def _ranges(unit: UnitFile, key: str, ranges: tuple[IdRange, ...]) -> Iterator[UnitProblem]:
    if len(ranges) > _MAX_ID_RANGES:
        yield unit.problem(
            ("idmap", key),
            f"has {len(ranges)} ranges",
            f"the kernel takes at most {_MAX_ID_RANGES}; merge adjacent ranges",
        )
    for index, item in enumerate(ranges):
        for side in ("inside", "outside"):
            if getattr(item, side) + item.count > _ID_SPACE:
                yield unit.problem(
                    ("idmap", key, index, "count"),
                    f"runs past id {_ID_SPACE - 1}",
                    f"lower {side} or count",
                )
        for other in range(index):
            for side in ("inside", "outside"):
                if _overlap(ranges[other], item, side):
                    yield unit.problem(
                        ("idmap", key, index),
                        f"{side} ids {_span(item, side)} overlap {side} ids "
                        f"{_span(ranges[other], side)} of {key}[{other}]",
                        "give each range its own ids",
                    )


def _span(item: IdRange, side: str) -> str:
    start: int = getattr(item, side)
    return f"{start}..{start + item.count - 1}"


def _overlap(a: IdRange, b: IdRange, side: str) -> bool:
    start_a, start_b = getattr(a, side), getattr(b, side)
    return bool(start_a < start_b + b.count and start_b < start_a + a.count)


def _user_mapped(unit: UnitFile) -> Iterator[UnitProblem]:
    model = sandbox_model(unit)
    assert model.idmap is not None
    uid, gid = (int(x) for x in model.sandbox.user.split(":"))
    for key, wanted, ranges in (
        ("uid", uid, model.idmap.uid),
        ("gid", gid, model.idmap.gid or model.idmap.uid),
    ):
        if not any(r.inside <= wanted < r.inside + r.count for r in ranges):
            yield unit.problem(
                ("sandbox", "user"),
                f"{key} {wanted} is not mapped by idmap.{key}",
                f"add a range of idmap.{key} that covers inside id {wanted}",
            )


def _mounts(unit: UnitFile) -> Iterator[UnitProblem]:
    seen: dict[str, int] = {}
    for index, mount in enumerate(sandbox_model(unit).mount):
        if mount.target == "/":
            yield unit.problem(
                ("mount", index, "target"),
                "is the sandbox's root",
                "mount on a directory inside it; the root itself is [rootfs]",
            )
        if mount.target in seen:
            yield unit.problem(
                ("mount", index, "target"),
                f"{mount.target!r} is already the target of mount[{seen[mount.target]}]",
                "give each mount its own target",
            )
        seen.setdefault(mount.target, index)


def _syscalls(unit: UnitFile) -> Iterator[UnitProblem]:
    security = sandbox_model(unit).security
    lists = {"syscalls_allow": security.syscalls_allow, "syscalls_deny": security.syscalls_deny}
    if security.seccomp == "unconfined":
        for key in (key for key, names in lists.items() if names is not None):
            yield unit.problem(
                ("security", key),
                'has no effect with seccomp = "unconfined", which loads no filter',
                f'pick a profile (seccomp = "default" or "os") or remove {key}',
            )
        return
    both = sorted(set(security.syscalls_allow or ()) & set(security.syscalls_deny or ()))
    if both:
        yield unit.problem(
            ("security", "syscalls_deny"),
            f"{', '.join(map(repr, both))} {'is' if len(both) == 1 else 'are'} in "
            "syscalls_allow too",
            "a call is allowed or denied, not both: remove it from one of the two lists",
        )


def _limits(unit: UnitFile, where: tuple[str, ...], limits: Limits) -> Iterator[UnitProblem]:
    yield from _floors(unit, where, limits)
    if (
        limits.memory_high is not None
        and limits.memory_max is not None
        and limits.memory_high > limits.memory_max
    ):
        yield unit.problem(
            (*where, "memory_high"),
            "is above memory_max",
            "memory_high throttles before memory_max kills; make it lower than memory_max",
        )


def _floors(unit: UnitFile, where: tuple[str, ...], limits: Limits) -> Iterator[UnitProblem]:
    """Limits under which no sandbox starts (model.py says how each floor was found)."""
    yield from _memory_floors(unit, where, limits)
    if limits.pids_max is not None and limits.pids_max < PIDS_MIN:
        yield unit.problem(
            (*where, "pids_max"),
            f"{limits.pids_max} is below {PIDS_MIN}, the fewest tasks a sandbox starts with",
            f'give at least {PIDS_MIN}, or "max" (sandman\'s first process and the init share '
            "the cgroup while the init starts; each `sandman exec` adds two while it runs)",
        )
    if limits.cpu_max is not None and limits.cpu_max < CPU_MAX_MIN:
        yield unit.problem(
            (*where, "cpu_max"),
            f"{limits.cpu_max:g}% is below {CPU_MAX_MIN:g}%, the kernel's smallest CPU quota "
            "(1 ms per 100 ms period)",
            f'give at least "{CPU_MAX_MIN:g}%"',
        )


def _memory_floors(unit: UnitFile, where: tuple[str, ...], limits: Limits) -> Iterator[UnitProblem]:
    least = format_size(MEMORY_MIN)
    for key, why in (
        ("memory_max", "the kernel refuses a limit below what the cgroup uses, or OOM-kills"),
        ("memory_high", "above memory_high the kernel throttles every allocation"),
    ):
        size = getattr(limits, key)
        if size is not None and size < MEMORY_MIN:
            yield unit.problem(
                (*where, key),
                f"{_size_text(size)} is below {least}, the least memory a sandbox starts in",
                f"give at least {least}: starting a sandbox takes about 3M, and {why}",
            )


def _size_text(size: int) -> str:
    shown = format_size(size)
    return shown if shown[-1].isalpha() else f"{size} bytes"


def _network(unit: UnitFile) -> Iterator[UnitProblem]:
    section = network_model(unit).network
    subnet = ipaddress.IPv4Network(section.subnet)
    if subnet.prefixlen > 30:
        yield unit.problem(
            ("network", "subnet"),
            f"/{subnet.prefixlen} leaves no room for sandboxes",
            "use a prefix of /30 or shorter, e.g. /24",
        )
    if section.gateway is not None:
        yield from _gateway(
            unit, ("network", "gateway"), subnet, ipaddress.ip_address(section.gateway)
        )
    if section.subnet6 is None:
        if section.gateway6 is not None:
            yield unit.problem(
                ("network", "gateway6"),
                "is set but subnet6 is not",
                "add subnet6 or remove gateway6",
            )
        return
    subnet6 = ipaddress.IPv6Network(section.subnet6)
    if subnet6.prefixlen > 126:
        yield unit.problem(
            ("network", "subnet6"),
            f"/{subnet6.prefixlen} leaves no room for sandboxes",
            "use a prefix of /126 or shorter, e.g. /64",
        )
    if section.gateway6 is not None:
        yield from _gateway(
            unit, ("network", "gateway6"), subnet6, ipaddress.ip_address(section.gateway6)
        )


def _gateway(
    unit: UnitFile,
    path: tuple[str, ...],
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network,
    gateway: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> Iterator[UnitProblem]:
    if gateway not in subnet:
        yield unit.problem(
            path, f"{gateway} is outside the subnet {subnet}", f"pick an address in {subnet}"
        )
    elif gateway == subnet.network_address:
        yield unit.problem(
            path, f"{gateway} is the subnet's network address", f"pick a host address in {subnet}"
        )
    elif subnet.version == 4 and gateway == subnet.broadcast_address:
        yield unit.problem(
            path,
            f"{gateway} is the subnet's broadcast address",
            f"pick a host address in {subnet}",
        )


def _slice(unit: UnitFile) -> Iterator[UnitProblem]:
    if unit.name == ROOT_SLICE:
        yield unit.problem(
            (),
            f"{ROOT_SLICE!r} is the root slice, which sandman always makes",
            "give your slice another name; its parent defaults to the root slice",
        )
    yield from _limits(unit, ("slice",), slice_model(unit).slice)
