"""Network facts of the host, one link dump, one address dump and one rule dump per run, and the
drift of each network and sandbox record against them."""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
from collections.abc import Iterable, Iterator
from ipaddress import ip_interface
from typing import Any, NamedTuple

from sandman.observe.facts import Drift, NetworkDeclared, Record


class NetworkFacts(NamedTuple):
    links: dict[str, Any]  # name -> LinkFact
    addresses: dict[int, list[bytes]]  # ifindex -> raw addresses, decoded when asked for
    rules: tuple[Any, ...]  # RuleFact
    # The rules by (kind, owner): each record's check looks up its own, where a scan of every
    # rule for each made `status` of 1000 sandboxes quadratic.
    owned: dict[tuple[str, str], list[Any]]

    @classmethod
    def read(cls, tag: str, names: Iterable[str] = ()) -> "NetworkFacts":
        """The links named `names` or carrying the instance's tag (orphans): the dump holds
        every link of the host, and decoding only these keeps observe flat in the host's size."""
        from sandman.kernel import net_dump

        links = net_dump.dump_links_where(set(names), (f"{tag}-", f"{tag}b-"))
        rules = net_dump.dump_rules(tag)
        owned: dict[tuple[str, str], list[Any]] = {}
        for rule in rules:
            owned.setdefault((rule.kind, rule.owner), []).append(rule)
        return cls(links, net_dump.dump_address_payloads(), rules, owned)

    def addresses_of(self, index: int) -> set[str]:
        from sandman.kernel.net_facts import parse_address

        return {str(parse_address(p)[1]) for p in self.addresses.get(index, ())}

    def drift(self, record: Record) -> Iterator[Drift]:
        if record.kind == "network":
            network = record.network
            yield from self._bridge(str(network.bridge), network)
            if network.nat and not self._rule("nat", record.name):
                yield Drift("network.nat", "a masquerade rule", "none")
            yield from self._forward(record.name, str(network.bridge))
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
            yield from self._source_filter(record)

    def _forward(self, name: str, bridge: str) -> Iterator[Drift]:
        from sandman.kernel import nft_filter
        from sandman.kernel.net_facts import FORWARD

        wanted = [(r.chain, r.comment) for r in nft_filter.forward_rules(name, bridge)]
        yield from self._exactly("network.forward", FORWARD, name, wanted, "forward policy rules")

    def _source_filter(self, record: Record) -> Iterator[Drift]:
        """The rules made from what the record says of the sandbox's veth and addresses."""
        from ipaddress import IPv4Interface, IPv6Interface

        from sandman.kernel import nft_filter, source_filter
        from sandman.kernel.net_facts import ANTISPOOF

        sandbox = record.sandbox
        if sandbox.veth is None or sandbox.address is None:
            return
        six = IPv6Interface(sandbox.address6).ip if sandbox.address6 else None
        source = source_filter.source_of(sandbox.veth, IPv4Interface(sandbox.address).ip, six)
        wanted = nft_filter.source_rule_names(record.name, source)
        yield from self._exactly(
            "network.filter", ANTISPOOF, record.name, wanted, "source filter rules"
        )

    def _exactly(
        self, what: str, kind: str, owner: str, wanted: Iterable[tuple[str, str]], rules: str
    ) -> Iterator[Drift]:
        """Drift unless `owner`'s rules of `kind` are exactly `wanted`, (chain, comment) pairs."""
        want = set(wanted)
        have = {(r.chain, r.comment) for r in self.owned.get((kind, owner), ())}
        if have != want:
            found = f"{len(want - have)} missing, {len(have - want)} not declared"
            yield Drift(what, f"{len(want)} {rules}", found)

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
        return bool(self.owned.get((kind, owner)))
