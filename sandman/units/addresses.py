"""Address assignment for sandboxes on networks: fixed addresses checked, "auto" resolved.

`address = "auto"` takes the lowest free address of the network's subnet, sandboxes in name order,
after every fixed address is reserved: the same units always give the same addresses. `sticky`
(the addresses a previous apply recorded) is honoured first, so that adding a sandbox never moves
the address of one that already runs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from ipaddress import IPv4Interface, IPv6Interface

from sandman.record import field, record
from sandman.units.desired import DesiredNetwork
from sandman.units.load import UnitFile, UnitSet, sandbox_model

Interface = IPv4Interface | IPv6Interface
Sticky = Mapping[str, tuple[str | None, str | None]]
Slot = tuple[str, int]  # (network or sandbox name, IP version)
_GATEWAY = "the gateway"
_HOST_HINT = 'pick another address in the subnet or "auto"'


@record
class _Pool:
    """One subnet of one network and who holds which of its addresses so far."""

    network: str
    gateway: Interface
    taken: dict[int, str] = field(default_factory=dict)
    # Every address below it is taken: addresses are only taken while units are resolved, so
    # each search goes on from where the last one ended (from the start for each, 1000 "auto"
    # sandboxes made 500,000 lookups).
    _searched: int = field(default=0, init=False, repr=False)

    def __post_init__(self) -> None:
        self.taken[int(self.gateway.ip)] = _GATEWAY

    @property
    def subnet(self) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
        return self.gateway.network

    def free(self, address: int) -> bool:
        first, last = int(self.subnet.network_address), int(self.subnet.broadcast_address)
        return first < address < last and address not in self.taken

    def lowest_free(self) -> int | None:
        address = max(int(self.subnet.network_address) + 1, self._searched)
        last = int(self.subnet.broadcast_address)
        while address < last and address in self.taken:
            address += 1
        self._searched = address
        return address if address < last else None

    def interface(self, address: int) -> Interface:
        return ipaddress.ip_interface(f"{ipaddress.ip_address(address)}/{self.subnet.prefixlen}")


class Allocator:
    def __init__(self, units: UnitSet, networks: Mapping[str, DesiredNetwork]) -> None:
        self.units = units
        self.pools: dict[Slot, _Pool] = {}
        for name, network in networks.items():
            self.pools[(name, 4)] = _Pool(name, network.gateway)
            if network.gateway6 is not None:
                self.pools[(name, 6)] = _Pool(name, network.gateway6)
        self.result: dict[Slot, Interface] = {}

    def assign(
        self, wanted: list[tuple[UnitFile, int, str]], sticky: Sticky
    ) -> dict[Slot, Interface]:
        for unit, family, text in wanted:
            if text != "auto":
                self._fixed(unit, family, text)
        for unit, family, text in wanted:
            if text == "auto":
                self._keep(unit, family, sticky)
        for unit, family, text in wanted:
            if text == "auto" and (unit.name, family) not in self.result:
                self._lowest(unit, family)
        return self.result

    def _pool(self, unit: UnitFile, family: int) -> _Pool:
        net = sandbox_model(unit).network
        assert net is not None
        return self.pools[(net.attach, family)]

    def _take(self, unit: UnitFile, family: int, pool: _Pool, address: int) -> None:
        pool.taken[address] = f"sandbox {unit.name!r}"
        self.result[(unit.name, family)] = pool.interface(address)

    def _fixed(self, unit: UnitFile, family: int, text: str) -> None:
        pool = self._pool(unit, family)
        interface = ipaddress.ip_interface(
            text if "/" in text else f"{text}/{pool.subnet.prefixlen}"
        )
        problem = _fixed_problem(pool, text, interface, family)
        if problem:
            self.units.problems.append(unit.problem(_key(family), *problem))
        else:
            self._take(unit, family, pool, int(interface.ip))

    def _keep(self, unit: UnitFile, family: int, sticky: Sticky) -> None:
        recorded = sticky.get(unit.name, (None, None))[0 if family == 4 else 1]
        if recorded is None:
            return
        pool = self._pool(unit, family)
        try:
            address = ipaddress.ip_interface(recorded).ip
        except ValueError:
            return
        if address in pool.subnet and pool.free(int(address)):
            self._take(unit, family, pool, int(address))

    def _lowest(self, unit: UnitFile, family: int) -> None:
        pool = self._pool(unit, family)
        address = pool.lowest_free()
        if address is None:
            self.units.problems.append(
                unit.problem(
                    _key(family),
                    f"no free address is left in {pool.subnet}",
                    f"use a larger subnet for network {pool.network!r}",
                )
            )
            return
        self._take(unit, family, pool, address)


def _fixed_problem(
    pool: _Pool, text: str, interface: Interface, family: int
) -> tuple[str, str] | None:
    subnet = pool.subnet
    where = f"{pool.network}'s subnet{'' if family == 4 else '6'} {subnet}"
    if interface.ip not in subnet:
        return f"{text} is outside {where}", f'pick an address in {subnet} or "auto"'
    if interface.network.prefixlen != subnet.prefixlen:
        return (
            f"{text} has prefix /{interface.network.prefixlen} but {where} is /{subnet.prefixlen}",
            f"write /{subnet.prefixlen} or leave the prefix out",
        )
    if interface.ip == subnet.network_address:
        return f"{interface.ip} is the network address of {where}", _HOST_HINT
    if interface.ip == subnet.broadcast_address:
        last = "broadcast address" if family == 4 else "last address, which sandman never assigns,"
        return f"{interface.ip} is the {last} of {where}", _HOST_HINT
    owner = pool.taken.get(int(interface.ip))
    if owner == _GATEWAY:
        return f"{interface.ip} is the gateway of network {pool.network!r}", _HOST_HINT
    if owner is not None:
        return f"{interface.ip} is already taken by {owner}", 'pick another address or "auto"'
    return None


def _key(family: int) -> tuple[str, str]:
    return ("network", "address" if family == 4 else "address6")
