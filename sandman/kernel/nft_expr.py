"""nf_tables expressions as bytes: the building blocks of every rule sandman writes; pure code.

Each helper encodes what `nft` compiles a match or a verdict to, as the kernel reads it
(<linux/netfilter/nf_tables.h>: integers big-endian unless the kernel keeps them host-endian,
nested attributes). Registers: NFT_REG_1 (128 bits) holds what is compared, NFT_REG_2 a port.
"""

from __future__ import annotations

import functools
import struct
from ipaddress import IPv4Network, IPv6Network

from sandman.kernel.netlink import asciiz, be32, nest, nla

Network = IPv4Network | IPv6Network

NFTA_LIST_ELEM, NFTA_EXPR_NAME, NFTA_EXPR_DATA = 1, 1, 2
NFTA_DATA_VALUE, NFTA_DATA_VERDICT, NFTA_VERDICT_CODE, NFTA_VERDICT_CHAIN = 1, 2, 1, 2
REG_VERDICT, REG_1, REG_2 = 0, 1, 2
CMP_EQ, CMP_NEQ = 0, 1
META_PROTOCOL, META_IIF, META_OIF, META_IIFNAME, META_OIFNAME = 2, 4, 5, 6, 7
META_NFPROTO, META_L4PROTO = 15, 16
PAYLOAD_LL, PAYLOAD_NETWORK, PAYLOAD_TRANSPORT = 0, 1, 2
CT_STATE, CT_STATUS = 0, 2
NF_DROP, NF_ACCEPT, NFT_JUMP = 0, 1, -3
NFPROTO = {4: 2, 6: 10}  # NFPROTO_IPV4, NFPROTO_IPV6 (<linux/netfilter.h>)
IFNAMSIZ = 16
# (offset, length) of the source and destination address in the IPv4 and IPv6 headers
ADDR_FIELDS = {4: {"saddr": (12, 4), "daddr": (16, 4)}, 6: {"saddr": (8, 16), "daddr": (24, 16)}}


def expr(name: str, *data: bytes) -> bytes:
    return nest(NFTA_LIST_ELEM, nla(NFTA_EXPR_NAME, asciiz(name)), nest(NFTA_EXPR_DATA, *data))


def value(attribute: int, raw: bytes) -> bytes:
    return nest(attribute, nla(NFTA_DATA_VALUE, raw))


# Expressions that recur in every sandbox's rules (the same header fields, the same compares)
# are encoded once per process: observe encodes each sandbox's expected rules to compare with
# the dump, and status of 100 sandboxes encoded the same few thousand times. Bounded where a
# value is a sandbox's own (its MAC, address, chain), so a long-lived daemon does not grow.
@functools.lru_cache(maxsize=4096)
def cmp(raw: bytes, op: int = CMP_EQ) -> bytes:
    return expr("cmp", nla(1, be32(REG_1)), nla(2, be32(op)), value(3, raw))  # SREG, OP, DATA


def meta(key: int, raw: bytes, op: int = CMP_EQ) -> list[bytes]:
    return [expr("meta", nla(1, be32(REG_1)), nla(2, be32(key))), cmp(raw, op)]  # DREG, KEY


@functools.cache
def payload(base: int, offset: int, length: int) -> bytes:
    return expr(
        "payload", *(nla(i, be32(v)) for i, v in enumerate((REG_1, base, offset, length), 1))
    )


def field(base: int, offset: int, raw: bytes, op: int = CMP_EQ) -> list[bytes]:
    """The `len(raw)` bytes at `offset` of the header `base` compared with `raw`."""
    return [payload(base, offset, len(raw)), cmp(raw, op)]


def host_u32(number: int) -> bytes:
    return struct.pack("=I", number)  # meta iif/oif, fib results and ct bits are host-endian


def bits(mask: int, length: int = 4) -> bytes:
    """`reg1 = reg1 & mask`, of a host-endian 32-bit register (ct state, ct status)."""
    regs = nla(1, be32(REG_1)) + nla(2, be32(REG_1)) + nla(3, be32(length))  # SREG, DREG, LEN
    return expr("bitwise", regs, value(4, host_u32(mask)), value(5, bytes(length)))


def masked(length: int, mask: bytes) -> bytes:
    """`reg1 = reg1 & mask` over `length` bytes, as loaded (addresses)."""
    regs = nla(1, be32(REG_1)) + nla(2, be32(REG_1)) + nla(3, be32(length))
    return expr("bitwise", regs, value(4, mask), value(5, bytes(length)))


def family(version: int) -> list[bytes]:
    """Match IPv4 or IPv6 packets: an inet table sees both."""
    return meta(META_NFPROTO, bytes([NFPROTO[version]]))


def ifname(key: int, name: str, op: int = CMP_EQ) -> list[bytes]:
    """`iifname`/`oifname` equal to `name`: the kernel compares all 16 bytes, NUL padded."""
    return meta(key, name.encode().ljust(IFNAMSIZ, b"\0"), op)


def match_network(network: Network, which: str, op: int = CMP_EQ) -> list[bytes]:
    offset, length = ADDR_FIELDS[network.version][which]
    load = payload(PAYLOAD_NETWORK, offset, length)
    if network.prefixlen == network.max_prefixlen:
        return [load, cmp(network.network_address.packed, op)]
    return [load, masked(length, network.netmask.packed), cmp(network.network_address.packed, op)]


def ct_any(key: int, mask: int) -> list[bytes]:
    """`ct state`/`ct status` has one of the bits of `mask`."""
    load = expr("ct", nla(1, be32(REG_1)), nla(2, be32(key)))  # DREG, KEY
    return [load, bits(mask), cmp(bytes(4), CMP_NEQ)]


def verdict(code: int, chain: str | None = None) -> list[bytes]:
    return [_verdict(code, chain)]


@functools.lru_cache(maxsize=4096)
def _verdict(code: int, chain: str | None) -> bytes:
    inner = nla(NFTA_VERDICT_CODE, be32(code))
    if chain is not None:
        inner += nla(NFTA_VERDICT_CHAIN, asciiz(chain))
    data = nest(2, nest(NFTA_DATA_VERDICT, inner))  # NFTA_IMMEDIATE_DATA
    return expr("immediate", nla(1, be32(REG_VERDICT)), data)


def drop() -> list[bytes]:
    return verdict(NF_DROP)


def accept() -> list[bytes]:
    return verdict(NF_ACCEPT)


def jump(chain: str) -> list[bytes]:
    return verdict(NFT_JUMP, chain)
