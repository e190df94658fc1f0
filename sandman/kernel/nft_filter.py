"""The filtering rules of sandman's networks, as bytes; pure code.

Two defences, each in the table where the kernel shows it the packets it must judge:

- The forward policy (inet table, chain `forward`): what the host routes INTO a network's bridge
  is dropped unless it stays within the network (bridged traffic reaches inet forward only with
  br_netfilter, then with the bridge as both interfaces), answers a connection (`ct state
  established,related`) or was DNATed by a port forward (`ct status dnat`). What leaves a
  network is not judged here: a sandbox reaches the outside (through NAT where `nat = true`),
  and a packet for another network meets that network's rules. Matched by bridge name, so one
  set of rules holds for IPv4 and IPv6.

- The source filter (bridge table, one chain per sandbox): every frame a sandbox sends enters
  the bridge through the host end of its veth, and is dropped unless it carries the sandbox's
  MAC, is ARP, IPv4 or IPv6 (no VLAN tag, no other protocol), has the sandbox's MAC and IPv4
  address as ARP sender, its IPv4 address as source, and for IPv6 its address or the link-local
  one its MAC gives (EUI-64) as source; router advertisements and redirects are dropped, and
  neighbour advertisements must name its own address. A bridge hook sees the frame before the
  bridge learns its MAC and before the host's neighbour table or another sandbox does.
"""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import NamedTuple

from sandman.kernel.net_facts import ANTISPOOF, FORWARD, rule_comment
from sandman.kernel.nft_expr import (
    CMP_NEQ,
    CT_STATE,
    CT_STATUS,
    META_IIFNAME,
    META_L4PROTO,
    META_OIFNAME,
    PAYLOAD_LL,
    PAYLOAD_NETWORK,
    PAYLOAD_TRANSPORT,
    accept,
    ct_any,
    drop,
    field,
    ifname,
    jump,
    meta,
)
from sandman.kernel.nft_rules import FORWARD_CHAIN, Chain, Rule

# <linux/netfilter/nf_conntrack_common.h>: ct state bits, ct status bits
CT_ESTABLISHED, CT_RELATED = 1 << 1, 1 << 2
IPS_DST_NAT = 1 << 5

# The bridge table's base chain: NF_BR_PRE_ROUTING, the bridge family's filter priority (-200),
# before br_netfilter (0) hands bridged IP packets to the inet hooks.
BRIDGE_CHAIN = Chain("prerouting", "filter", 0, -200)
ETH_ARP, ETH_IP, ETH_IP6 = b"\x08\x06", b"\x08\x00", b"\x86\xdd"
ICMPV6 = 58
ND_ROUTER_ADVERT, ND_NEIGHBOR_ADVERT, ND_REDIRECT = 134, 136, 137


def forward_rules(network: str, bridge: str) -> tuple[Rule, ...]:
    """What the host forwards into `bridge`: within the network, replies and published ports
    pass, the rest is dropped."""
    into = ifname(META_OIFNAME, bridge)
    established = ct_any(CT_STATE, CT_ESTABLISHED | CT_RELATED)
    rules = (
        ("within", [*ifname(META_IIFNAME, bridge), *into, *accept()]),
        ("replies", [*into, *established, *accept()]),
        ("published", [*into, *ct_any(CT_STATUS, IPS_DST_NAT), *accept()]),
        ("closed", [*into, *drop()]),
    )
    return tuple(
        Rule(FORWARD_CHAIN.name, rule_comment(FORWARD, network, f"{what} {bridge}"), tuple(exprs))
        for what, exprs in rules
    )


class Source(NamedTuple):
    """What a sandbox may send as: the host end of its veth, its MAC and addresses."""

    veth: str
    mac: str
    address: IPv4Address
    address6: IPv6Address | None = None

    @property
    def link_local(self) -> IPv6Address:
        """fe80::/64 with the EUI-64 of the MAC: the kernel's default link-local address."""
        raw = bytes.fromhex(self.mac.replace(":", ""))
        eui = bytes([raw[0] ^ 0x02]) + raw[1:3] + b"\xff\xfe" + raw[3:]
        return IPv6Address(b"\xfe\x80" + bytes(6) + eui)


def filter_chain(sandbox: str) -> str:
    """The sandbox's own chain in the bridge table ('_' is in no unit name: no collision with
    the base chain)."""
    return f"from_{sandbox}"


def source_rules(sandbox: str, source: Source) -> tuple[Rule, ...]:
    """The jump from the base chain for frames from the sandbox's veth, then its own checks."""
    named = source_rule_names(sandbox, source)
    exprs = [*(make() for _, make in _checks(source)), _entry(source.veth, sandbox)]
    return tuple(Rule(chain, comment, e) for (chain, comment), e in zip(named, exprs, strict=True))


def source_rule_names(sandbox: str, source: Source) -> list[tuple[str, str]]:
    """(chain, comment) of each of source_rules, in its order, without building one: what
    observe compares with the rules found (building them all cost `status` of 1000 sandboxes
    a third of its time)."""
    chain = filter_chain(sandbox)
    names = [(chain, rule_comment(ANTISPOOF, sandbox, what)) for what, _ in _checks(source)]
    return [*names, (BRIDGE_CHAIN.name, rule_comment(ANTISPOOF, sandbox, f"port {source.veth}"))]


def _entry(veth: str, sandbox: str) -> tuple[bytes, ...]:
    return (*ifname(META_IIFNAME, veth), *jump(filter_chain(sandbox)))


_Exprs = Callable[[], tuple[bytes, ...]]


def _checks(source: Source) -> list[tuple[str, _Exprs]]:
    """Each check's name and how to make its expressions (made only when rules are written)."""
    mac = bytes.fromhex(source.mac.replace(":", ""))
    ip = source.address.packed
    types = (ETH_ARP, ETH_IP) if source.address6 is None else (ETH_ARP, ETH_IP, ETH_IP6)
    names = "arp ip" if source.address6 is None else "arp ip ip6"

    def arp() -> list[bytes]:
        return field(PAYLOAD_LL, 12, ETH_ARP)

    found: list[tuple[str, _Exprs]] = [
        (f"mac {source.mac}", lambda: (*field(PAYLOAD_LL, 6, mac, CMP_NEQ), *drop())),
        (
            f"ethertypes {names}",
            lambda: (*(x for t in types for x in field(PAYLOAD_LL, 12, t, CMP_NEQ)), *drop()),
        ),
        (
            f"arp-mac {source.mac}",
            lambda: (*arp(), *field(PAYLOAD_NETWORK, 8, mac, CMP_NEQ), *drop()),
        ),
        (
            f"arp-ip {source.address}",
            lambda: (*arp(), *field(PAYLOAD_NETWORK, 14, ip, CMP_NEQ), *drop()),
        ),
        (f"ip {source.address}", lambda: (*_ethertype(ETH_IP), *_not_from(12, ip), *drop())),
    ]
    if source.address6 is not None:
        found += _checks6(source.address6, source.link_local)
    return found


def _ethertype(raw: bytes) -> list[bytes]:
    return field(PAYLOAD_LL, 12, raw)


def _not_from(offset: int, *allowed: bytes, base: int = PAYLOAD_NETWORK) -> list[bytes]:
    """The field at `offset` is none of `allowed` (each compare must fail for the rule to go on)."""
    return [x for raw in allowed for x in field(base, offset, raw, CMP_NEQ)]


def _icmpv6(kind: int) -> list[bytes]:
    return [
        *_ethertype(ETH_IP6),
        *meta(META_L4PROTO, bytes([ICMPV6])),
        *field(PAYLOAD_TRANSPORT, 0, bytes([kind])),
    ]


def _checks6(address6: IPv6Address, link_local: IPv6Address) -> list[tuple[str, _Exprs]]:
    own = (address6.packed, link_local.packed)
    return [
        (
            f"ip6 {address6} {link_local}",
            lambda: (*_ethertype(ETH_IP6), *_not_from(8, *own), *drop()),
        ),
        ("router-advert", lambda: (*_icmpv6(ND_ROUTER_ADVERT), *drop())),
        ("redirect", lambda: (*_icmpv6(ND_REDIRECT), *drop())),
        (
            f"neighbor-advert {address6} {link_local}",
            lambda: (
                *_icmpv6(ND_NEIGHBOR_ADVERT),
                *_not_from(8, *own, base=PAYLOAD_TRANSPORT),
                *drop(),
            ),
        ),
    ]
