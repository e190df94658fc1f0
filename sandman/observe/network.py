"""Network facts of the host, one link dump, one address dump and one rule dump per run, and the
drift of each network and sandbox record against them."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from ipaddress import ip_interface
from typing import Any, NamedTuple

from sandman.observe.facts import Drift, NetworkDeclared, Record


class NetworkFacts(NamedTuple):
    links: dict[str, Any]  # name -> LinkFact
    addresses: dict[int, list[bytes]]  # ifindex -> raw addresses, decoded when asked for
    rules: tuple[Any, ...]  # RuleFact

    @classmethod
    def read(cls, tag: str, names: Iterable[str] = ()) -> NetworkFacts:
        """The links named `names` or carrying the instance's tag (orphans): the dump holds
        every link of the host, and decoding only these keeps observe flat in the host's size."""
        from sandman.kernel import net_dump

        links = net_dump.dump_links_where(set(names), (f"{tag}-", f"{tag}b-"))
        return cls(links, net_dump.dump_address_payloads(), net_dump.dump_rules(tag))

    def addresses_of(self, index: int) -> set[str]:
        from sandman.kernel.net_facts import parse_address

        return {str(parse_address(p)[1]) for p in self.addresses.get(index, ())}

    def drift(self, record: Record) -> Iterator[Drift]:
        if record.kind == "network":
            network = record.network
            yield from self._bridge(str(network.bridge), network)
            if network.nat and not self._rule("nat", record.name):
                yield Drift("network.nat", "a masquerade rule", "none")
        elif record.kind == "sandbox" and record.sandbox.network:
            veth = record.sandbox.veth
            link = self.links.get(str(veth))
            bridge = self.links.get(str(record.runtime.bridge))
            if link is None:
                yield Drift("network.veth", f"link {veth}", "missing")
            elif bridge is None or link.master != bridge.ifindex:
                yield Drift("network.veth", f"{veth} on bridge {record.runtime.bridge}", "detached")
            elif record.sandbox.ports and not self._rule("port", record.name):
                yield Drift("network.ports", "port forward rules", "none")

    def _bridge(self, name: str, network: NetworkDeclared) -> Iterator[Drift]:
        link = self.links.get(name)
        if link is None:
            yield Drift("network.bridge", f"bridge {name}", "missing")
            return
        if not link.up:
            yield Drift("network.bridge", f"bridge {name} up", "down")
        have = self.addresses_of(link.ifindex)
        for key, wanted in (("gateway", network.gateway), ("gateway6", network.gateway6)):
            if wanted and str(ip_interface(wanted)) not in have:
                yield Drift(f"network.{key}", f"{wanted} on {name}", "missing")

    def _rule(self, kind: str, owner: str) -> bool:
        return any(rule.kind == kind and rule.owner == owner for rule in self.rules)
