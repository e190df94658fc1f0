"""nf_tables rules as bytes: sandman's NAT and port-forward rules, and the messages; pure code.

Each expression is what `nft` would compile the rule in the comment to, encoded as the kernel
reads it (<linux/netfilter/nf_tables.h>: integers big-endian, nested attributes). Registers:
NFT_REG_1 (128 bits) holds what is compared, NFT_REG_2 the port. nat.py sends the messages built
here as one batch.
"""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple when the class is made (about 0.1 ms a field, at every start).
import socket
import struct
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address, ip_network
from typing import NamedTuple

from sandman.kernel.net_facts import BASE, NAT, PORT, rule_comment
from sandman.kernel.netlink import NFGENMSG, Request, asciiz, be32, nest, nla
from sandman.kernel.nft_expr import (
    CMP_NEQ,
    META_IIF,
    META_L4PROTO,
    META_OIF,
    NFPROTO,
    PAYLOAD_TRANSPORT,
    REG_1,
    REG_2,
    cmp,
    drop,
    expr,
    family,
    host_u32,
    match_network,
    meta,
    payload,
    value,
)

Address = IPv4Address | IPv6Address
Network = IPv4Network | IPv6Network

# <linux/netfilter/nf_tables.h>: messages, flags, attributes
NFT_MSG_NEWTABLE, NFT_MSG_DELTABLE, NFT_MSG_NEWCHAIN, NFT_MSG_DELCHAIN = 0, 2, 3, 5
NFT_MSG_NEWRULE, NFT_MSG_DELRULE = 6, 8
NLM_F_CREATE, NLM_F_APPEND = 0x400, 0x800  # <linux/netlink.h>
NFTA_TABLE_NAME = 1
NFTA_CHAIN_TABLE, NFTA_CHAIN_NAME, NFTA_CHAIN_HOOK, NFTA_CHAIN_TYPE = 1, 3, 4, 7
NFTA_HOOK_HOOKNUM, NFTA_HOOK_PRIORITY = 1, 2
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_EXPRESSIONS = 1, 2, 3, 4
NFTA_RULE_USERDATA = 7
NFTNL_UDATA_RULE_COMMENT = 0
NAT_DNAT = 1
NFPROTO_INET, NFPROTO_BRIDGE = 1, 7
FIB_RESULT_ADDRTYPE, FIB_F_DADDR = 3, 1 << 1
RTN_LOCAL = 2
LOOPBACK_IFINDEX = 1  # `lo` has index 1 in every network namespace
L4PROTO = {"tcp": socket.IPPROTO_TCP, "udp": socket.IPPROTO_UDP}

LOCALNET = ip_network("127.0.0.0/8")
LOCALHOST6 = ip_network("::1/128")


class Chain(NamedTuple):
    """A base chain of the instance's table: name, type, hook and priority."""

    name: str
    type: str
    hook: int  # NF_INET_PRE_ROUTING 0, NF_INET_FORWARD 2, NF_INET_LOCAL_OUT 3, POST_ROUTING 4
    priority: int


# The forward policy of the networks (nft_filter.py): NF_INET_FORWARD, the filter priority.
FORWARD_CHAIN = Chain("forward", "filter", 2, 0)

# guard runs at raw priority, before conntrack undoes NAT on replies, so it only ever sees
# packets that were sent to 127.0.0.0/8 from outside, never the replies of a port forward.
CHAINS = (
    Chain("guard", "filter", 0, -300),
    Chain("prerouting", "nat", 0, -100),
    Chain("output", "nat", 3, -100),
    Chain("postrouting", "nat", 4, 100),
    FORWARD_CHAIN,
)


class Rule(NamedTuple):
    """One rule: its chain, comment (kind, owner, what) and expressions."""

    chain: str
    comment: str
    expressions: tuple[bytes, ...]  # each an encoded NFTA_LIST_ELEM


def match_local_daddr() -> list[bytes]:
    """`fib daddr type local`: the packet is for one of this host's addresses."""
    attrs = (nla(1, be32(REG_1)), nla(2, be32(FIB_RESULT_ADDRTYPE)), nla(3, be32(FIB_F_DADDR)))
    return [expr("fib", *attrs), cmp(host_u32(RTN_LOCAL))]


def match_port(protocol: str, port: int) -> list[bytes]:
    load = payload(PAYLOAD_TRANSPORT, 2, 2)  # the destination port
    return [*meta(META_L4PROTO, bytes([L4PROTO[protocol]])), load, cmp(struct.pack("!H", port))]


def dnat(address: Address, port: int) -> list[bytes]:
    # TYPE, FAMILY, REG_ADDR_MIN, REG_PROTO_MIN
    nat = (NAT_DNAT, NFPROTO[address.version], REG_1), (REG_2,)
    return [
        expr("immediate", nla(1, be32(REG_1)), value(2, address.packed)),
        expr("immediate", nla(1, be32(REG_2)), value(2, struct.pack("!H", port))),
        expr("nat", *(nla(i, be32(v)) for i, v in enumerate(nat[0], 1)), nla(5, be32(nat[1][0]))),
    ]


def masquerade() -> list[bytes]:
    return [expr("masq")]


def base_rules() -> tuple[Rule, ...]:
    """The instance table's own rules, for port forwards from the host's 127.0.0.1.

    guard: route_localnet lets the bridges route 127.0.0.0/8; drop such packets unless they
    come from `lo`, or a sandbox could reach the host's loopback-only services (CVE-2020-8558).
    localnet: a connection from 127.0.0.1 that was DNATed to a sandbox leaves through its
    bridge; give it the bridge's address, or the sandbox would answer to its own loopback.
    """
    not_lo = host_u32(LOOPBACK_IFINDEX)
    guard = [*family(4), *meta(META_IIF, not_lo, CMP_NEQ), *match_network(LOCALNET, "daddr")]
    localnet = [*family(4), *match_network(LOCALNET, "saddr"), *meta(META_OIF, not_lo, CMP_NEQ)]
    return (
        Rule("guard", rule_comment(BASE, "guard", str(LOCALNET)), (*guard, *drop())),
        Rule(
            "postrouting", rule_comment(BASE, "localnet", str(LOCALNET)), (*localnet, *masquerade())
        ),
    )


def nat_rules(network: str, subnets: tuple[Network, ...]) -> tuple[Rule, ...]:
    """Masquerade what leaves each subnet for an address outside it."""
    rules = []
    for subnet in subnets:
        exprs = [*family(subnet.version), *match_network(subnet, "saddr")]
        exprs += [*match_network(subnet, "daddr", CMP_NEQ), *masquerade()]
        rules.append(Rule("postrouting", rule_comment(NAT, network, str(subnet)), tuple(exprs)))
    return tuple(rules)


def _endpoint(address: Address | None, port: int) -> str:
    if address is None:
        return f"*:{port}"
    return f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}"


class Forward(NamedTuple):
    """One port forward to one sandbox address: `host_address` None means every local address."""

    protocol: str
    host_port: int
    host_address: str | None
    target: Address
    target_port: int

    @property
    def spec(self) -> str:
        listen = None if self.host_address is None else ip_address(self.host_address)
        ends = _endpoint(listen, self.host_port), _endpoint(self.target, self.target_port)
        return f"{self.protocol} {ends[0]} {ends[1]}"


def port_rules(sandbox: str, forward: Forward) -> tuple[Rule, ...]:
    """DNAT the forward's host address and port to the sandbox, both for packets from elsewhere
    (prerouting) and from the host itself (output)."""
    target, listen = forward.target, forward.host_address
    if listen is not None and ip_address(listen).version != target.version:
        raise ValueError(f"cannot forward {listen} to {target}: address families differ")
    where = match_local_daddr() if listen is None else match_network(ip_network(listen), "daddr")
    exprs = (*family(target.version), *where, *match_port(forward.protocol, forward.host_port))
    exprs += (*dnat(target, forward.target_port),)
    comment = rule_comment(PORT, sandbox, forward.spec)
    return tuple(Rule(chain, comment, exprs) for chain in ("prerouting", "output"))


def loopback_reachable(host_address: str | None) -> bool:
    """Whether a forward listens on 127.0.0.0/8, which needs route_localnet on the bridge."""
    return host_address is None or ip_address(host_address) in LOCALNET


# --- messages ------------------------------------------------------------------------------------
# Every message names its family: the instance has an inet table (NAT, port forwards, the forward
# policy) and a bridge table of the same name (each sandbox's source filter, nft_filter.py).


def _header(family: int) -> bytes:
    return NFGENMSG.pack(family, 0, 0)


def _where(family: int) -> str:
    return "bridge" if family == NFPROTO_BRIDGE else "inet"


def new_table(table: str, family: int = NFPROTO_INET) -> Request:
    """Create the table; without NLM_F_EXCL an existing one is left as it is."""
    body = _header(family) + nla(NFTA_TABLE_NAME, asciiz(table))
    return Request(NFT_MSG_NEWTABLE, NLM_F_CREATE, body, f"creating table {_where(family)}")


def delete_table(table: str, family: int = NFPROTO_INET) -> Request:
    body = _header(family) + nla(NFTA_TABLE_NAME, asciiz(table))
    return Request(NFT_MSG_DELTABLE, 0, body, f"deleting table {_where(family)}")


def new_chain(table: str, chain: Chain, family: int = NFPROTO_INET) -> Request:
    """Create a base chain; without NLM_F_EXCL an existing one with the same hook is kept."""
    hook = nest(
        NFTA_CHAIN_HOOK,
        nla(NFTA_HOOK_HOOKNUM, be32(chain.hook)),
        nla(NFTA_HOOK_PRIORITY, be32(chain.priority)),
    )
    body = nla(NFTA_CHAIN_TABLE, asciiz(table)) + nla(NFTA_CHAIN_NAME, asciiz(chain.name))
    body += hook + nla(NFTA_CHAIN_TYPE, asciiz(chain.type))
    doing = f"creating chain {chain.name}"
    return Request(NFT_MSG_NEWCHAIN, NLM_F_CREATE, _header(family) + body, doing)


def new_regular_chain(table: str, name: str, family: int) -> Request:
    """A chain with no hook, entered only by a jump; an existing one is kept."""
    body = nla(NFTA_CHAIN_TABLE, asciiz(table)) + nla(NFTA_CHAIN_NAME, asciiz(name))
    return Request(NFT_MSG_NEWCHAIN, NLM_F_CREATE, _header(family) + body, f"creating chain {name}")


def delete_chain(table: str, name: str, family: int) -> Request:
    """Delete the chain with its rules (no rule may jump to it any more)."""
    body = nla(NFTA_CHAIN_TABLE, asciiz(table)) + nla(NFTA_CHAIN_NAME, asciiz(name))
    return Request(NFT_MSG_DELCHAIN, 0, _header(family) + body, f"deleting chain {name}")


def new_rule(table: str, rule: Rule, family: int = NFPROTO_INET) -> Request:
    comment = asciiz(rule.comment)
    if len(comment) > 255:  # the TLV's length is one byte
        raise ValueError(f"rule comment longer than 254 bytes: {rule.comment!r}")
    userdata = bytes([NFTNL_UDATA_RULE_COMMENT, len(comment)]) + comment  # libnftnl's TLV
    body = nla(NFTA_RULE_TABLE, asciiz(table)) + nla(NFTA_RULE_CHAIN, asciiz(rule.chain))
    body += nest(NFTA_RULE_EXPRESSIONS, *rule.expressions) + nla(NFTA_RULE_USERDATA, userdata)
    doing = f"adding rule `{rule.comment}` to chain {rule.chain}"
    return Request(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND, _header(family) + body, doing)


def delete_rule(
    table: str, chain: str, handle: int, comment: str, family: int = NFPROTO_INET
) -> Request:
    body = nla(NFTA_RULE_TABLE, asciiz(table)) + nla(NFTA_RULE_CHAIN, asciiz(chain))
    body += nla(NFTA_RULE_HANDLE, struct.pack(">Q", handle))
    doing = f"deleting rule `{comment}` from chain {chain}"
    return Request(NFT_MSG_DELRULE, 0, _header(family) + body, doing)
