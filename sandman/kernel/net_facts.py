"""Facts about sandman's links, addresses and NAT rules, parsed from raw netlink dumps; pure code.

Learned from pyinfra's facts: the dump (net_dump.py) is one call that returns the kernel's bytes,
and turning them into frozen facts is a pure function, tested from fixtures captured on a real
host. Only the attributes observe needs are decoded; the rest of each message is skipped by
length, which is what keeps a dump of a thousand links in the tens of milliseconds.

Also here because they are pure: the stable MACs of links, and the comments that name rules.
"""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
import struct
from collections.abc import Iterable
from ipaddress import IPv4Interface, IPv6Interface, ip_address, ip_interface
from typing import NamedTuple

from sandman.hashing import blake2b
from sandman.kernel.netlink import NFGENMSG, attributes

Interface = IPv4Interface | IPv6Interface

# <linux/rtnetlink.h>, <linux/if_link.h>, <linux/if_addr.h>
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
IFADDRMSG = struct.Struct("=BBBBI")  # family, prefixlen, flags, scope, index
IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK, IFLA_MASTER = 1, 3, 5, 10
IFLA_OPERSTATE, IFLA_LINKINFO, IFLA_LINK_NETNSID, IFLA_INFO_KIND = 16, 18, 37, 1
IFA_ADDRESS, IFA_LOCAL = 1, 2
IFF_UP = 0x1
AF_INET, AF_INET6 = 2, 10
OPERSTATES = ("UNKNOWN", "NOTPRESENT", "DOWN", "LOWERLAYERDOWN", "TESTING", "DORMANT", "UP")
# <linux/netfilter/nf_tables.h>
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE = 1, 2, 3
NFTA_RULE_EXPRESSIONS, NFTA_RULE_USERDATA = 4, 7
NFTNL_UDATA_RULE_COMMENT = 0  # libnftnl's userdata TLV type of `comment "..."`

_MAC_KEY = b"sandman mac v1"  # changing it changes every MAC, and with them every ARP cache


def _string(value: bytes) -> str:
    return value.split(b"\0", 1)[0].decode(errors="replace")


def _u32(value: bytes | None) -> int | None:
    return None if value is None else int(struct.unpack("=I", value[:4])[0])


class LinkFact(NamedTuple):
    """One host link, as observe needs it."""

    name: str
    ifindex: int
    kind: str | None  # IFLA_INFO_KIND: "bridge", "veth"; None for a physical device
    master: int | None  # index of the bridge the link is a port of
    up: bool  # administratively up (IFF_UP)
    operstate: str  # "UP", "DOWN", "LOWERLAYERDOWN", "UNKNOWN", ...
    mac: str | None
    peer_index: int | None  # IFLA_LINK: for a veth, the peer's index in the peer's netns
    peer_netns_id: int | None  # IFLA_LINK_NETNSID: the peer's netns, as the host numbers it


def link_name(payload: bytes) -> str:
    """Just the name of an RTM_NEWLINK message: cheap enough to filter every link by it."""
    for kind, value in attributes(payload, IFINFOMSG.size):
        if kind == IFLA_IFNAME:
            return _string(value)
    return ""


def parse_link(payload: bytes) -> LinkFact:
    _, _, index, flags, _ = IFINFOMSG.unpack_from(payload)
    found = dict(attributes(payload, IFINFOMSG.size))
    info = dict(attributes(found.get(IFLA_LINKINFO, b"")))
    mac, netns = found.get(IFLA_ADDRESS), found.get(IFLA_LINK_NETNSID)
    state = found.get(IFLA_OPERSTATE, b"\0")[0]
    return LinkFact(
        name=_string(found.get(IFLA_IFNAME, b"")),
        ifindex=index,
        kind=_string(info[IFLA_INFO_KIND]) if IFLA_INFO_KIND in info else None,
        master=_u32(found.get(IFLA_MASTER)),
        up=bool(flags & IFF_UP),
        operstate=OPERSTATES[state] if state < len(OPERSTATES) else str(state),
        mac=None if mac is None else ":".join(f"{b:02x}" for b in mac),
        peer_index=_u32(found.get(IFLA_LINK)),
        peer_netns_id=None if netns is None else int(struct.unpack("=i", netns[:4])[0]),
    )


def parse_links(payloads: Iterable[bytes], prefix: str) -> dict[str, LinkFact]:
    """The links whose name starts with `prefix`, by name."""
    wanted = (p for p in payloads if link_name(p).startswith(prefix))
    return {fact.name: fact for fact in map(parse_link, wanted)}


def address_index(payload: bytes) -> int:
    """The link index of an RTM_NEWADDR message, without decoding the rest."""
    return int(IFADDRMSG.unpack_from(payload)[4])


def parse_address(payload: bytes) -> tuple[int, Interface]:
    _, prefixlen, _, _, index = IFADDRMSG.unpack_from(payload)
    found = dict(attributes(payload, IFADDRMSG.size))
    # IFA_LOCAL is the address itself; IFA_ADDRESS is the peer's on point-to-point links.
    raw = found.get(IFA_LOCAL) or found[IFA_ADDRESS]
    return index, ip_interface(f"{ip_address(raw)}/{prefixlen}")


def parse_addresses(payloads: Iterable[bytes]) -> dict[int, tuple[Interface, ...]]:
    """Every address, by link index, sorted IPv4 first."""
    found: dict[int, list[Interface]] = {}
    for index, address in map(parse_address, payloads):
        found.setdefault(index, []).append(address)
    return {i: tuple(sorted(a, key=lambda x: (x.version, x))) for i, a in found.items()}


def derive_mac(name: str, role: str) -> str:
    """A locally administered unicast MAC for the link `name` playing `role` ("bridge", "host",
    "peer"): keyed, so it looks random, and stable, so a recreated link keeps its neighbours'
    ARP entries valid (nspawn's generate_mac)."""
    raw = bytearray(blake2b(f"{role}\0{name}".encode(), key=_MAC_KEY).digest()[:6])
    raw[0] = (raw[0] & 0xFE) | 0x02  # clear multicast, set locally administered
    return ":".join(f"{b:02x}" for b in raw)


# Rules carry a comment "KIND OWNER SPEC": observe finds its rules, and what they do, from it.
BASE = "base"  # the instance table's own rules; owner "guard" or "localnet"
NAT = "nat"  # owner: a network
PORT = "port"  # owner: a sandbox
FORWARD = "forward"  # owner: a network; its forward policy (nft_filter.py)
ANTISPOOF = "antispoof"  # owner: a sandbox; its source filter, in the bridge table
KINDS = (BASE, NAT, PORT, FORWARD, ANTISPOOF)
NFPROTO_INET, NFPROTO_BRIDGE = 1, 7  # the families of the instance's two tables


class RuleFact(NamedTuple):
    chain: str
    handle: int
    kind: str  # one of KINDS, or "" for a rule sandman did not make
    owner: str
    spec: str  # "10.88.0.0/24"; "tcp 127.0.0.1:8080 10.88.0.10:80"
    family: int = NFPROTO_INET  # of the table: inet, or bridge for ANTISPOOF

    @property
    def comment(self) -> str:
        return rule_comment(self.kind, self.owner, self.spec)


def rule_comment(kind: str, owner: str, spec: str) -> str:
    return f"{kind} {owner} {spec}"


def _comment(userdata: bytes) -> str:
    """The comment in a rule's userdata: libnftnl TLVs of a one-byte type and a one-byte length."""
    offset = 0
    while offset + 2 <= len(userdata):
        kind, length = userdata[offset], userdata[offset + 1]
        if kind == NFTNL_UDATA_RULE_COMMENT:
            return _string(userdata[offset + 2 : offset + 2 + length])
        offset += 2 + length
    return ""


# <linux/netfilter/nf_tables.h>: a chain's attributes; <linux/netfilter.h>: verdicts, families
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_POLICY = 1, 3, 4, 5
NFTA_HOOK_HOOKNUM = 1
NF_INET_FORWARD, NF_DROP = 2, 0
IP_FAMILIES = {2: "ip", 10: "ip6", 1: "inet"}  # the families whose forward hook routes IP


class ChainFact(NamedTuple):
    """A base chain of any table on the host, as the forward-policy check needs it."""

    family: int
    table: str
    name: str
    hook: int | None  # None for a regular chain
    policy: int | None

    @property
    def where(self) -> str:
        return f"{IP_FAMILIES.get(self.family, self.family)} {self.table} chain {self.name}"


def parse_chain(payload: bytes) -> ChainFact:
    family = NFGENMSG.unpack_from(payload)[0]
    found = dict(attributes(payload, NFGENMSG.size))
    hook = dict(attributes(found.get(NFTA_CHAIN_HOOK, b"")))
    number = hook.get(NFTA_HOOK_HOOKNUM)
    policy = found.get(NFTA_CHAIN_POLICY)
    return ChainFact(
        family,
        _string(found.get(NFTA_CHAIN_TABLE, b"")),
        _string(found.get(NFTA_CHAIN_NAME, b"")),
        None if number is None else int.from_bytes(number, "big"),
        None if policy is None else int.from_bytes(policy, "big"),
    )


def forward_drops(chains: Iterable[ChainFact], own_table: str) -> list[ChainFact]:
    """The IP forward chains of other tables whose policy drops: an accept in sandman's table
    ends only its own chain, and what such a chain does not accept itself is dropped."""
    return [
        c
        for c in chains
        if c.family in IP_FAMILIES
        and (c.hook, c.policy) == (NF_INET_FORWARD, NF_DROP)
        and not (c.family == 1 and c.table == own_table)
    ]


def parse_rule(payload: bytes) -> RuleFact:
    family = NFGENMSG.unpack_from(payload)[0]
    found = dict(attributes(payload, NFGENMSG.size))
    comment = _comment(found.get(NFTA_RULE_USERDATA, b""))
    kind, owner, spec = [*comment.split(" ", 2), "", ""][:3]
    if kind not in KINDS:
        kind, owner, spec = "", "", comment
    (handle,) = struct.unpack(">Q", found[NFTA_RULE_HANDLE])
    return RuleFact(_string(found.get(NFTA_RULE_CHAIN, b"")), handle, kind, owner, spec, family)
