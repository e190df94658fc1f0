"""The route-netlink requests sandman makes of links and addresses (veth.py, net.py), over its
own netlink (kernel/netlink.py): a link by name, a link up, an address added. Each takes the
socket to talk on: the process's for the host, one made in a sandbox's netns for its inside."""

from __future__ import annotations

import contextlib
import errno
import socket
import struct

from sandman.kernel import netlink
from sandman.kernel.net_facts import (
    IFA_ADDRESS,
    IFA_LOCAL,
    IFADDRMSG,
    IFF_UP,
    IFINFOMSG,
    IFLA_IFNAME,
    Interface,
    LinkFact,
    parse_link,
)

# <linux/rtnetlink.h>, <linux/netlink.h>
RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 17, 18, 20, 24
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
# <linux/if_link.h>, <linux/if_addr.h> (the attributes observe decodes too are net_facts')
IFLA_NET_NS_FD, IFLA_INFO_DATA = 28, 2
IFA_BROADCAST, IFA_FLAGS = 4, 8
IFA_F_NODAD = 0x02
RT_SCOPE_UNIVERSE = 0


def host_socket() -> socket.socket:
    """The process's NETLINK_ROUTE socket, in the host's netns (where apply runs)."""
    return netlink.process_socket(netlink.NETLINK_ROUTE)


def u32(value: int) -> bytes:
    return struct.pack("=I", value)


def mac_bytes(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


def link_message(index: int, up: bool, *attributes: bytes) -> bytes:
    """An ifinfomsg for link `index` (0: a new one), set up when `up`, then the attributes."""
    flags = IFF_UP if up else 0
    return IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, flags) + b"".join(attributes)


def get_link(sock: socket.socket, name: str, what: str) -> LinkFact | None:
    """The link `name` in the socket's netns, or None if there is none."""
    body = link_message(0, False, netlink.nla(IFLA_IFNAME, netlink.asciiz(name)))
    try:
        replies = netlink.call(sock, RTM_GETLINK, body, what, "getting link")
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return None
        raise
    return parse_link(replies[0])


def set_up(sock: socket.socket, index: int, name: str, doing: str = "setting link up") -> None:
    netlink.call(sock, RTM_NEWLINK, link_message(index, True), name, doing)


def add_address(sock: socket.socket, index: int, address: Interface, name: str) -> None:
    """Add `address` unless the link already holds it (EEXIST); other addresses stay."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    raw = address.ip.packed
    body = IFADDRMSG.pack(family, address.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    body += netlink.nla(IFA_LOCAL, raw) + netlink.nla(IFA_ADDRESS, raw)
    if address.version == 6:
        # sandman hands out unique addresses, so DAD would only hold the address back a second.
        body += netlink.nla(IFA_FLAGS, u32(IFA_F_NODAD))
    elif address.network.prefixlen < 31:
        body += netlink.nla(IFA_BROADCAST, address.network.broadcast_address.packed)
    flags = NLM_F_CREATE | NLM_F_EXCL
    with contextlib.suppress(FileExistsError):
        netlink.call(sock, RTM_NEWADDR, body, name, f"adding address {address}", flags=flags)
