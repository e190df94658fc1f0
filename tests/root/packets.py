"""Ethernet frames built by hand for the network security tests: what a sandbox with a raw socket
could send. Pure functions; the tests send them from an AF_PACKET socket in a sandbox's netns."""

from __future__ import annotations

import struct
from ipaddress import IPv4Address, IPv6Address

ETH_IP, ETH_ARP, ETH_IP6 = 0x0800, 0x0806, 0x86DD
BROADCAST = b"\xff" * 6
ALL_NODES = IPv6Address("ff02::1")


def mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def ether(dst: bytes, src: bytes, ethertype: int, payload: bytes) -> bytes:
    return dst + src + struct.pack("!H", ethertype) + payload


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(int(word) for word in struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def ipv4_udp(src: IPv4Address, dst: IPv4Address, port: int, data: bytes) -> bytes:
    """An IPv4 UDP datagram to `port` (UDP checksum 0: none, which IPv4 allows)."""
    udp = struct.pack("!HHHH", 40000, port, 8 + len(data), 0) + data
    header = struct.pack(
        "!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0, 64, 17, 0, src.packed, dst.packed
    )
    header = header[:10] + struct.pack("!H", checksum(header)) + header[12:]
    return header + udp


def _ipv6(src: IPv6Address, dst: IPv6Address, next_header: int, body: bytes, hops: int) -> bytes:
    return (
        struct.pack("!IHBB", 6 << 28, len(body), next_header, hops) + src.packed + dst.packed + body
    )


def _pseudo_sum(src: IPv6Address, dst: IPv6Address, next_header: int, body: bytes) -> int:
    pseudo = src.packed + dst.packed + struct.pack("!I3xB", len(body), next_header)
    return checksum(pseudo + body)


def ipv6_udp(src: IPv6Address, dst: IPv6Address, port: int, data: bytes) -> bytes:
    """An IPv6 UDP datagram to `port`, its checksum right (IPv6 requires one)."""
    udp = struct.pack("!HHHH", 40000, port, 8 + len(data), 0) + data
    udp = udp[:6] + struct.pack("!H", _pseudo_sum(src, dst, 17, udp)) + udp[8:]
    return _ipv6(src, dst, 17, udp, 64)


def arp(op: int, sha: bytes, spa: IPv4Address, tha: bytes, tpa: IPv4Address) -> bytes:
    """An Ethernet/IPv4 ARP message: 1 request, 2 reply."""
    return struct.pack("!HHBBH", 1, ETH_IP, 6, 4, op) + sha + spa.packed + tha + tpa.packed


def _icmpv6(src: IPv6Address, dst: IPv6Address, message: bytes) -> bytes:
    message = message[:2] + struct.pack("!H", _pseudo_sum(src, dst, 58, message)) + message[4:]
    return _ipv6(src, dst, 58, message, 255)  # neighbour discovery insists on hop limit 255


def neighbor_advert(
    src: IPv6Address, dst: IPv6Address, target: IPv6Address, lladdr: bytes
) -> bytes:
    """An unsolicited neighbour advertisement with the override flag: `target` is at `lladdr`."""
    option = bytes([2, 1]) + lladdr  # target link-layer address, 8 bytes
    return _icmpv6(src, dst, struct.pack("!BBHI", 136, 0, 0, 0x20000000) + target.packed + option)


def router_advert(src: IPv6Address, lladdr: bytes) -> bytes:
    """A router advertisement to all nodes: `src` is a default router for 30 minutes."""
    option = bytes([1, 1]) + lladdr  # source link-layer address
    body = struct.pack("!BBHBBHII", 134, 0, 0, 64, 0, 1800, 0, 0) + option
    return _icmpv6(src, ALL_NODES, body)


def multicast_mac(address: IPv6Address) -> bytes:
    return b"\x33\x33" + address.packed[-4:]
