"""Checks across units, and the resolution of what they leave open (addresses, names, paths)."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator, Mapping
from ipaddress import (
    IPv4Address,
    IPv4Interface,
    IPv4Network,
    IPv6Address,
    IPv6Interface,
    IPv6Network,
)

from sandman import booting
from sandman.units import names
from sandman.units.addresses import Allocator, Interface, Slot, Sticky
from sandman.units.constants import ROOT_SLICE
from sandman.units.desired import Desired, DesiredNetwork, DesiredSandbox, DesiredSlice
from sandman.units.image_defaults import ImageConfigs, with_defaults
from sandman.units.load import UnitFile, UnitSet, network_model, sandbox_model, slice_model
from sandman.units.plain import SandboxUnit

Network = IPv4Network | IPv6Network


def resolve(
    units: UnitSet, tag: str, sticky: Sticky | None = None, images: ImageConfigs | None = None
) -> Desired:
    """Build the desired state; problems found are appended to `units.problems`. IMAGES gives
    the config of a container image a sandbox runs on (its defaults: image_defaults.py)."""
    slices = _slices(units)
    networks = _networks(units, tag)
    _check_subnets(units)
    addresses = _addresses(units, networks, sticky or {})
    _check_ports(units)
    _check_idmaps(units)
    _check_cpu_within_parents(units, slices)
    sandboxes = {}
    for name, unit in units.sandboxes.items():
        model, from_image = _image_defaults(units, unit, sandbox_model(unit), images)
        slice_name = model.sandbox.slice
        sandboxes[name] = DesiredSandbox(
            name=name,
            file=unit.file,
            unit=model,
            hostname=model.sandbox.hostname or name,
            slice_path=slices[slice_name].path if slice_name in slices else (ROOT_SLICE,),
            veth=names.veth_name(tag, name) if model.network is not None else None,
            address=_v4(addresses.get((name, 4))),
            address6=_v6(addresses.get((name, 6))),
            machine_id=booting.machine_id(name, tag) if model.sandbox.boot else None,
            from_image=from_image,
        )
    _check_ifnames(units, networks, sandboxes)
    return Desired(tag, sandboxes, networks, slices)


def _image_defaults(
    units: UnitSet, unit: UnitFile, model: SandboxUnit, images: ImageConfigs | None
) -> tuple[SandboxUnit, tuple[str, ...]]:
    """The model with its image's defaults, and the keys they gave; a sandbox that then has no
    command (and does not boot) is a problem."""
    image = model.rootfs.image
    config = images(image) if images is not None and image is not None else None
    keys: list[str] = []
    if config is not None:
        try:
            model, keys = with_defaults(model, config)
        except ValueError as exc:
            units.problems.append(
                unit.problem(
                    ("rootfs", "image"),
                    f"image {image!r} cannot be run as it says: {exc}",
                    "set the key in [sandbox] to override the image's config",
                )
            )
    if model.sandbox.command is None and not model.sandbox.boot:
        units.problems.append(unit.problem(("sandbox", "command"), "is missing", _NO_COMMAND))
    return model, tuple(keys)


_NO_COMMAND = (
    'give the init\'s command line, e.g. command = ["/bin/httpd", "-f"], or set boot = true to '
    "run the image's own init"
)


def _v4(interface: Interface | None) -> IPv4Interface | None:
    return interface if isinstance(interface, IPv4Interface) else None


def _v6(interface: Interface | None) -> IPv6Interface | None:
    return interface if isinstance(interface, IPv6Interface) else None


def _slices(units: UnitSet) -> dict[str, DesiredSlice]:
    for unit in units.sandboxes.values():
        wanted = sandbox_model(unit).sandbox.slice
        if (
            wanted != ROOT_SLICE
            and wanted not in units.slices
            and ("slice", wanted) not in units.broken
        ):
            units.problems.append(
                unit.problem(
                    ("sandbox", "slice"),
                    f"names slice {wanted!r}, which no unit declares",
                    f"add {wanted}.slice.toml or use {_one_of({ROOT_SLICE, *units.slices})}",
                )
            )
    result = {}
    for name, unit in units.slices.items():
        path = _slice_path(units, name, unit)
        if path is not None:
            result[name] = DesiredSlice(name, unit.file, slice_model(unit), path)
    return result


def _slice_path(units: UnitSet, name: str, unit: UnitFile) -> tuple[str, ...] | None:
    path = [name]
    current = name
    while current != ROOT_SLICE:
        parent = slice_model(units.slices[current]).slice.parent
        if parent != ROOT_SLICE and parent not in units.slices:
            if current == name and ("slice", parent) not in units.broken:
                units.problems.append(
                    unit.problem(
                        ("slice", "parent"),
                        f"names slice {parent!r}, which no unit declares",
                        f"add {parent}.slice.toml or use {_one_of({ROOT_SLICE, *units.slices})}",
                    )
                )
            return None
        if parent in path:
            _report_cycle(units, unit, path[path.index(parent) :])
            return None
        path.append(parent)
        current = parent
    return tuple(reversed(path))


def _report_cycle(units: UnitSet, unit: UnitFile, cycle: list[str]) -> None:
    """Each slice of the cycle reports it; one that only leads into it is not the one to fix."""
    if cycle[0] != unit.name:
        return
    files = ", ".join(f"{name}.slice.toml" for name in sorted(cycle))
    hint = f'slices form a tree under {ROOT_SLICE!r}; set parent = "{ROOT_SLICE}" in one of {files}'
    if len(cycle) == 1:
        hint = f'a slice cannot be its own parent; set parent = "{ROOT_SLICE}" or another slice'
    units.problems.append(
        unit.problem(("slice", "parent"), f"makes a cycle: {' -> '.join([*cycle, cycle[0]])}", hint)
    )


def _one_of(known: set[str]) -> str:
    return "one of " + ", ".join(repr(k) for k in sorted(known))


def _networks(units: UnitSet, tag: str) -> dict[str, DesiredNetwork]:
    result = {}
    for name, unit in units.networks.items():
        section = network_model(unit).network
        subnet = IPv4Network(section.subnet)
        gateway = IPv4Address(section.gateway) if section.gateway else subnet.network_address + 1
        gateway6: IPv6Interface | None = None
        if section.subnet6 is not None:
            subnet6 = IPv6Network(section.subnet6)
            address6 = (
                IPv6Address(section.gateway6) if section.gateway6 else subnet6.network_address + 1
            )
            gateway6 = IPv6Interface(f"{address6}/{subnet6.prefixlen}")
        result[name] = DesiredNetwork(
            name=name,
            file=unit.file,
            unit=network_model(unit),
            bridge=section.bridge or names.bridge_name(tag, name),
            gateway=IPv4Interface(f"{gateway}/{subnet.prefixlen}"),
            gateway6=gateway6,
        )
    return result


def _check_subnets(units: UnitSet) -> None:
    seen: list[tuple[Network, str, str]] = []
    for name, unit in units.networks.items():
        section = network_model(unit).network
        for key, text in (("subnet", section.subnet), ("subnet6", section.subnet6)):
            if text is None:
                continue
            subnet = ipaddress.ip_network(text)
            for other_subnet, other_name, other_key in seen:
                if subnet.version == other_subnet.version and subnet.overlaps(other_subnet):
                    units.problems.append(
                        unit.problem(
                            ("network", key),
                            f"{subnet} overlaps {other_name}'s {other_key} {other_subnet}",
                            "give every network a subnet of its own",
                        )
                    )
            seen.append((subnet, name, key))


def _addresses(
    units: UnitSet, networks: Mapping[str, DesiredNetwork], sticky: Sticky
) -> dict[Slot, Interface]:
    allocator = Allocator(units, networks)
    wanted: list[tuple[UnitFile, int, str]] = []
    for unit in units.sandboxes.values():
        net = sandbox_model(unit).network
        if net is None:
            continue
        if net.attach not in networks:
            if ("network", net.attach) not in units.broken:
                also = f" or use {_one_of(set(networks))}" if networks else ""
                units.problems.append(
                    unit.problem(
                        ("network", "attach"),
                        f"names network {net.attach!r}, which no unit declares",
                        f"add {net.attach}.network.toml{also}",
                    )
                )
            continue
        wanted.append((unit, 4, net.address))
        has_v6 = (net.attach, 6) in allocator.pools
        if has_v6:
            wanted.append((unit, 6, net.address6 or "auto"))
        elif net.address6 is not None:
            units.problems.append(
                unit.problem(
                    ("network", "address6"),
                    f"is set but network {net.attach!r} has no subnet6",
                    f"add subnet6 to {net.attach}.network.toml or remove address6",
                )
            )
    return allocator.assign(wanted, sticky)


_Binding = tuple[int, str, int]  # (IP version, protocol, host port)
_Holder = tuple[str | None, str, int]  # (host address or None for all, sandbox, index in ports)


def _check_ports(units: UnitSet) -> None:
    bound: dict[_Binding, list[_Holder]] = {}
    for name, unit in units.sandboxes.items():
        net = sandbox_model(unit).network
        if net is None:
            continue
        for index, port in enumerate(net.ports):
            address = port.host_address
            version = ipaddress.ip_address(address).version if address else None
            if version == 6 and not _has_v6(units, net.attach):
                units.problems.append(
                    unit.problem(
                        ("network", "ports", index, "host_address"),
                        f"{address} is IPv6 but the sandbox has no IPv6 address",
                        "add subnet6 to its network or forward from an IPv4 address",
                    )
                )
                continue
            wildcard = address is None or ipaddress.ip_address(address).is_unspecified
            shown = None if wildcard else address
            for family in (version,) if version else (4, 6):
                key = (family, port.protocol, port.host)
                owner = _holder(bound.get(key, []), shown, name)
                if owner:
                    units.problems.append(
                        unit.problem(
                            ("network", "ports", index, "host"),
                            f"{port.protocol} port {port.host} on {address or 'all addresses'} is "
                            f"already forwarded by {owner}",
                            "pick another host port or host_address",
                        )
                    )
                    break
            for family in (version,) if version else (4, 6):
                bound.setdefault((family, port.protocol, port.host), []).append(
                    (shown, name, index)
                )


def _holder(bindings: list[_Holder], address: str | None, sandbox: str) -> str | None:
    """Who already holds a port: the same address, or either side listening on all of them."""
    for other, owner, index in bindings:
        if address is None or other is None or other == address:
            who = f"ports[{index}]" if owner == sandbox else f"sandbox {owner!r}"
            # With a wildcard on either side the addresses differ: say where the other listens.
            return who if other == address else f"{who} (on {other or 'all addresses'})"
    return None


def _has_v6(units: UnitSet, network: str) -> bool:
    unit = units.networks.get(network)
    return unit is not None and network_model(unit).network.subnet6 is not None


def _check_cpu_within_parents(units: UnitSet, slices: Mapping[str, DesiredSlice]) -> None:
    """No cgroup may ask more CPU than a slice above it allows: cgroup v1 refuses the write and
    v2 would silently give less, so the unit would promise what the host does not do."""
    for name, item in slices.items():
        own = item.unit.slice.cpu_max
        tightest = _tightest_cpu(slices, item.path[1:-1])
        if own is not None and tightest is not None and own > tightest[1]:
            units.problems.append(
                units.slices[name].problem(("slice", "cpu_max"), *_cpu_problem(own, tightest))
            )
    for unit in units.sandboxes.values():
        model = sandbox_model(unit)
        chain = slices[model.sandbox.slice].path[1:] if model.sandbox.slice in slices else ()
        own = model.resources.cpu_max
        tightest = _tightest_cpu(slices, chain)
        if own is not None and tightest is not None and own > tightest[1]:
            units.problems.append(
                unit.problem(("resources", "cpu_max"), *_cpu_problem(own, tightest))
            )


def _tightest_cpu(
    slices: Mapping[str, DesiredSlice], chain: tuple[str, ...]
) -> tuple[str, float] | None:
    limits = [(n, slices[n].unit.slice.cpu_max) for n in chain if n in slices]
    bounded = [(n, c) for n, c in limits if c is not None]
    return min(bounded, key=lambda item: item[1]) if bounded else None


def _cpu_problem(own: float, tightest: tuple[str, float]) -> tuple[str, str]:
    slice_name, limit = tightest
    return (
        f"{own:g}% is above the cpu_max of slice {slice_name!r} ({limit:g}%)",
        f"a cgroup gets no more CPU than its slices allow; ask {limit:g}% or less",
    )


def _check_idmaps(units: UnitSet) -> None:
    seen: list[tuple[int, int, str]] = []
    for name, unit in units.sandboxes.items():
        idmap = sandbox_model(unit).idmap
        if idmap is None or idmap.auto:
            continue
        ranges = {(r.outside, r.count) for r in (*idmap.uid, *idmap.gid)}
        for outside, count in sorted(ranges):
            for start, length, owner in seen:
                if outside < start + length and start < outside + count:
                    units.problems.append(
                        unit.problem(
                            ("idmap",),
                            f"host ids {outside}..{outside + count - 1} overlap "
                            f"{start}..{start + length - 1} of sandbox {owner!r}",
                            "give each sandbox its own host id range, or set auto = true",
                        )
                    )
                    break
        seen.extend((outside, count, name) for outside, count in sorted(ranges))


def _check_ifnames(
    units: UnitSet, networks: Mapping[str, DesiredNetwork], sandboxes: Mapping[str, DesiredSandbox]
) -> None:
    owners: dict[str, str] = {}
    for problem_unit, path, ifname, owner, hint in _ifnames(units, networks, sandboxes):
        if ifname in owners:
            units.problems.append(
                problem_unit.problem(
                    path,
                    f"interface name {ifname!r} is already used by {owners[ifname]}",
                    hint,
                )
            )
        owners.setdefault(ifname, owner)


def _ifnames(
    units: UnitSet, networks: Mapping[str, DesiredNetwork], sandboxes: Mapping[str, DesiredSandbox]
) -> Iterator[tuple[UnitFile, tuple[str, ...], str, str, str]]:
    """Derived names first, explicit `bridge` names last: a collision is then reported at the
    key that the user wrote and can change, not at a unit that merely has its default name."""
    for name, sandbox in sandboxes.items():
        if sandbox.veth is not None:
            owner = f"the veth of sandbox {name!r}"
            yield units.sandboxes[name], ("network",), sandbox.veth, owner, "rename the sandbox"
    explicit = {name for name, unit in units.networks.items() if network_model(unit).network.bridge}
    for name in sorted(networks, key=lambda n: (n in explicit, n)):
        hint = "rename the network or set bridge"
        if name in explicit:
            hint = "pick another bridge name"
        owner = f"the bridge of network {name!r}"
        yield units.networks[name], ("network", "bridge"), networks[name].bridge, owner, hint
