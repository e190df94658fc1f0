"""The dumps observe reads: host links, host addresses, an instance's rules; one each.

No pyroute2: observe runs on every `plan` and `status`, and pyroute2 costs 130 ms to import and
about 0.4 ms per link to decode every attribute of a dump. Here a dump is one request on a plain
netlink socket (netlink.py), and net_facts.py decodes only what observe needs: 1000 links in
about 20 ms. Errors are OSError with the errno and what was dumped as `filename`.
"""

from __future__ import annotations

import socket
import struct

from sandman.kernel import netlink
from sandman.kernel.net_facts import (
    IFADDRMSG,
    IFINFOMSG,
    NFTA_RULE_CHAIN,
    NFTA_RULE_TABLE,
    ChainFact,
    Interface,
    LinkFact,
    RuleFact,
    address_index,
    link_name,
    parse_addresses,
    parse_chain,
    parse_link,
    parse_links,
    parse_rule,
)

# <linux/rtnetlink.h>, <linux/if_link.h>, <linux/netfilter/nf_tables.h>, <linux/netfilter.h>
RTM_GETLINK, RTM_GETADDR = 18, 22
IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS = 29, 1 << 3
NFT_MSG_GETCHAIN, NFT_MSG_GETRULE, NFPROTO_UNSPEC, NFPROTO_INET = 4, 7, 0, 1


def table_name(tag: str) -> str:
    """The instance's nf_tables table: `inet sandman_<tag>`."""
    return f"sandman_{tag}"


def link_payloads() -> list[bytes]:
    """The raw RTM_NEWLINK replies of one dump of every host link, statistics left out."""
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    body += netlink.nla(IFLA_EXT_MASK, struct.pack("=I", RTEXT_FILTER_SKIP_STATS))
    return netlink.dump(netlink.NETLINK_ROUTE, RTM_GETLINK, body, "links")


def address_payloads() -> list[bytes]:
    body = IFADDRMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    return netlink.dump(netlink.NETLINK_ROUTE, RTM_GETADDR, body, "addresses")


def rule_payloads(table: str, family: int = NFPROTO_INET, chain: str | None = None) -> list[bytes]:
    """The raw rules of one table of the instance (inet or bridge), or of one chain of it; none
    if it is missing."""
    attrs = netlink.nla(NFTA_RULE_TABLE, netlink.asciiz(table))
    if chain is not None:
        attrs += netlink.nla(NFTA_RULE_CHAIN, netlink.asciiz(chain))
    return _rules(family, attrs, f"{table}")


def instance_rule_payloads(table: str) -> list[bytes]:
    """The raw rules of the tables named `table` in every family, in ONE dump. The kernel ends a
    dump filtered by table name at the first table of that name, so this dump takes every rule
    of the host and keeps the instance's by the table name alone, as the link dump does."""
    wanted = table.encode() + b"\0"
    return [p for p in _rules(NFPROTO_UNSPEC, b"", "rules") if rule_table(p) == wanted]


def rule_table(payload: bytes) -> bytes:
    """The raw NFTA_RULE_TABLE of a rule message (NUL-terminated), nothing else decoded."""
    for kind, value in netlink.attributes(payload, netlink.NFGENMSG.size):
        if kind == NFTA_RULE_TABLE:
            return value
    return b""


def _rules(family: int, attrs: bytes, what: str) -> list[bytes]:
    body = netlink.NFGENMSG.pack(family, 0, 0) + attrs
    kind = netlink.NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETRULE
    try:
        return netlink.dump(netlink.NETLINK_NETFILTER, kind, body, what)
    except FileNotFoundError:
        return []


def dump_links(prefix: str) -> dict[str, LinkFact]:
    """The host's links whose name starts with `prefix`, by name: one link dump."""
    return parse_links(link_payloads(), prefix)


def dump_links_where(names: set[str], prefixes: tuple[str, ...]) -> dict[str, LinkFact]:
    """The host's links named in `names` or starting with one of `prefixes`: one link dump."""
    wanted = (p for p in link_payloads() if _named(link_name(p), names, prefixes))
    return {fact.name: fact for fact in map(parse_link, wanted)}


def _named(name: str, names: set[str], prefixes: tuple[str, ...]) -> bool:
    return name in names or name.startswith(prefixes)


def dump_addresses() -> dict[int, tuple[Interface, ...]]:
    """Every address of the host's netns, IPv4 and IPv6, by link index: one address dump."""
    return parse_addresses(address_payloads())


def dump_address_payloads() -> dict[int, list[bytes]]:
    """The raw addresses of the host's netns by link index, one dump: observe decodes only
    those of its bridges (a host with many links has thousands)."""
    found: dict[int, list[bytes]] = {}
    for payload in address_payloads():
        found.setdefault(address_index(payload), []).append(payload)
    return found


def dump_rules(tag: str) -> tuple[RuleFact, ...]:
    """Every rule of the instance's tables, none if they are missing: one rule dump."""
    return tuple(map(parse_rule, instance_rule_payloads(table_name(tag))))


def dump_chains() -> tuple[ChainFact, ...]:
    """Every nf_tables chain of the host, of every table and family: one dump."""
    body = netlink.NFGENMSG.pack(NFPROTO_UNSPEC, 0, 0)
    kind = netlink.NFNL_SUBSYS_NFTABLES << 8 | NFT_MSG_GETCHAIN
    return tuple(map(parse_chain, netlink.dump(netlink.NETLINK_NETFILTER, kind, body, "chains")))
