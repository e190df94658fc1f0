"""A sandbox's veth pair, over sandman's own netlink (kernel/netlink.py): the host end on its
bridge, the peer `eth0` in the sandbox's netns with its addresses and default routes.

Learned from nspawn-network.c: the peer is born inside the sandbox's network namespace (ONE
RTM_NEWLINK, the netns in the peer's info), so it never sits in the host, not even for a moment;
the same message puts the host end on its bridge and up. The inside is then configured through a
netlink socket made in the sandbox's netns by this thread, without forking.

Plain netlink rather than pyroute2, which made this about 10 ms of each networked sandbox (its
message classes and its event loop per request) and is 50 to 130 ms to import: a sandbox is now
attached to a network without it. Idempotent: EEXIST on create means "check what is there and
converge". Errors are OSError with the errno and the link's name (or "pid N") as `filename`.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface

from sandman.kernel import links, netlink
from sandman.kernel.net_facts import IFADDRMSG, IFF_UP, IFINFOMSG, Interface, derive_mac, parse_link
from sandman.kernel.netns import netns_fd, thread_in_netns

PEER_NAME = "eth0"
LOOPBACK_INDEX = 1

# <linux/rtnetlink.h>, <linux/netlink.h>
RTM_NEWLINK, RTM_GETLINK, RTM_NEWADDR, RTM_NEWROUTE = 16, 18, 20, 24
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE = 0x100, 0x200, 0x400
RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type
RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST = 254, 4, 0, 1
RTA_OIF, RTA_GATEWAY = 4, 5
# <linux/if_link.h>, <linux/veth.h>, <linux/if_addr.h>
IFLA_ADDRESS, IFLA_IFNAME, IFLA_MASTER, IFLA_LINKINFO, IFLA_NET_NS_FD = 1, 3, 10, 18, 28
IFLA_INFO_KIND, IFLA_INFO_DATA, VETH_INFO_PEER = 1, 2, 1
IFA_ADDRESS, IFA_LOCAL, IFA_BROADCAST, IFA_FLAGS = 1, 2, 4, 8
IFA_F_NODAD = 0x02


def create_veth(
    host_name: str,
    pid: int,
    bridge: str,
    address: IPv4Interface,
    gateway: IPv4Address,
    *,
    address6: IPv6Interface | None = None,
    gateway6: IPv6Address | None = None,
    mac: str | None = None,
) -> None:
    """The sandbox of process `pid` is on `bridge`: veth `host_name` on the bridge and up, its
    peer `eth0` in the sandbox's netns, up, with the address(es) and default route(s) via the
    gateway(s), and `lo` up. An existing pair of the same two ends is kept and reconfigured.

    The peer is given the netns as an fd (IFLA_NET_NS_FD) rather than the pid: the netns that
    receives the peer is then the very one configured next, even if the pid were reused.
    `mac` is the peer's MAC; by default both ends get one derived from `host_name`.
    """
    with netns_fd(pid) as ns_fd:
        with thread_in_netns(ns_fd):
            inner = netlink.route_socket()
        with inner:
            peer = _Pair(inner, host_name, f"pid {pid}").ensure(bridge_index(bridge), ns_fd, mac)
            routes: list[tuple[Interface, IPv4Address | IPv6Address]] = [(address, gateway)]
            if address6 is not None and gateway6 is not None:
                routes.append((address6, gateway6))
            _configure_inside(inner, peer, routes, f"{PEER_NAME} of {host_name}")


def bridge_index(bridge: str) -> int:
    """From sysfs, which shows the host's netns, where apply runs: cheaper than a netlink
    query per sandbox attached."""
    try:
        with open(f"/sys/class/net/{bridge}/ifindex", "rb") as handle:
            index = int(handle.read())
    except FileNotFoundError:
        raise OSError(errno.ENODEV, "bridge does not exist", bridge) from None
    if not os.path.isdir(f"/sys/class/net/{bridge}/bridge"):
        raise OSError(errno.EINVAL, "link is not a bridge", bridge)
    return index


def _host_socket() -> socket.socket:
    return netlink.process_socket(netlink.NETLINK_ROUTE)


def _link_message(index: int, up: bool, *attributes: bytes) -> bytes:
    flags = IFF_UP if up else 0
    return IFINFOMSG.pack(socket.AF_UNSPEC, 0, index, flags, IFF_UP if up else 0) + b"".join(
        attributes
    )


def _mac(text: str) -> bytes:
    return bytes.fromhex(text.replace(":", ""))


class _Pair:
    """A veth pair under construction: the sandbox's netlink socket, the host end's name."""

    __slots__ = ("host_name", "inner", "sandbox")

    def __init__(self, inner: socket.socket, host_name: str, sandbox: str) -> None:
        self.inner = inner
        self.host_name = host_name
        self.sandbox = sandbox  # "pid N", for errors about the sandbox's side

    def ensure(self, master: int, ns_fd: int, mac: str | None) -> int:
        """Create the pair, or keep the one already there; return the peer's index inside."""
        for attempt in (1, 2):
            try:
                self._create(master, ns_fd, mac)
                return self._peer_index()
            except FileExistsError:
                existing = self._existing()
                if existing is not None:
                    return self._reattach(existing, master)
                if attempt == 2:
                    raise
                links.delete_link(self.host_name)  # a stale end whose peer is elsewhere
        raise AssertionError("unreachable")

    def _create(self, master: int, ns_fd: int, mac: str | None) -> None:
        peer = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
        peer += netlink.nla(IFLA_IFNAME, netlink.asciiz(PEER_NAME))
        peer += netlink.nla(IFLA_ADDRESS, _mac(mac or derive_mac(self.host_name, "peer")))
        peer += netlink.nla(IFLA_NET_NS_FD, struct.pack("=I", ns_fd))
        info = netlink.nla(IFLA_INFO_KIND, netlink.asciiz("veth"))
        info += netlink.nla(IFLA_INFO_DATA, netlink.nla(VETH_INFO_PEER, peer))
        body = _link_message(
            0,
            True,
            netlink.nla(IFLA_IFNAME, netlink.asciiz(self.host_name)),
            netlink.nla(IFLA_ADDRESS, _mac(derive_mac(self.host_name, "host"))),
            netlink.nla(IFLA_MASTER, struct.pack("=I", master)),
            netlink.nla(IFLA_LINKINFO, info),
        )
        flags = NLM_F_CREATE | NLM_F_EXCL
        netlink.call(
            _host_socket(), RTM_NEWLINK, body, self.host_name, "creating veth", flags=flags
        )

    def _existing(self) -> tuple[int, int] | None:
        """(host index, peer index) if `host_name` and the sandbox's eth0 are one pair."""
        host = _get_link(_host_socket(), self.host_name, self.host_name)
        peer = _get_link(self.inner, PEER_NAME, self.sandbox)
        if host is None and peer is not None:
            raise OSError(errno.EEXIST, "the sandbox already has another eth0", self.sandbox)
        if host is None or peer is None or host.kind != "veth" or peer.kind != "veth":
            return None
        if host.peer_index != peer.ifindex or peer.peer_index != host.ifindex:
            return None
        return host.ifindex, peer.ifindex

    def _reattach(self, existing: tuple[int, int], master: int) -> int:
        body = _link_message(existing[0], True, netlink.nla(IFLA_MASTER, struct.pack("=I", master)))
        netlink.call(_host_socket(), RTM_NEWLINK, body, self.host_name, "attaching veth")
        return existing[1]

    def _peer_index(self) -> int:
        peer = _get_link(self.inner, PEER_NAME, self.sandbox)
        if peer is None:
            raise OSError(errno.ENODEV, "veth peer missing in the sandbox", self.sandbox)
        return peer.ifindex


def _get_link(sock: socket.socket, name: str, what: str) -> _Found | None:
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    body += netlink.nla(IFLA_IFNAME, netlink.asciiz(name))
    try:
        replies = netlink.call(sock, RTM_GETLINK, body, what, "getting link")
    except OSError as exc:
        if exc.errno == errno.ENODEV:
            return None
        raise
    fact = parse_link(replies[0])
    return _Found(fact.ifindex, fact.kind, fact.peer_index)


class _Found:
    __slots__ = ("ifindex", "kind", "peer_index")

    def __init__(self, ifindex: int, kind: str | None, peer_index: int | None) -> None:
        self.ifindex, self.kind, self.peer_index = ifindex, kind, peer_index


def _configure_inside(
    inner: socket.socket,
    peer: int,
    routes: list[tuple[Interface, IPv4Address | IPv6Address]],
    name: str,
) -> None:
    """lo and eth0 up; each address on eth0 and a default route via its gateway (`replace`: a
    route already there is no error)."""
    for index in (LOOPBACK_INDEX, peer):
        netlink.call(inner, RTM_NEWLINK, _link_message(index, True), name, "setting link up")
    for address, gateway in routes:
        _add_address(inner, peer, address, name)
        _replace_default_route(inner, peer, address.version, gateway, name)


def _add_address(inner: socket.socket, index: int, address: Interface, name: str) -> None:
    """Add `address` unless the link already holds it (EEXIST); other addresses stay."""
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    raw = address.ip.packed
    body = IFADDRMSG.pack(family, address.network.prefixlen, 0, RT_SCOPE_UNIVERSE, index)
    body += netlink.nla(IFA_LOCAL, raw) + netlink.nla(IFA_ADDRESS, raw)
    if address.version == 6:
        # sandman hands out unique addresses, so DAD would only hold the address back a second.
        body += netlink.nla(IFA_FLAGS, struct.pack("=I", IFA_F_NODAD))
    elif address.network.prefixlen < 31:
        body += netlink.nla(IFA_BROADCAST, address.network.broadcast_address.packed)
    try:
        flags = NLM_F_CREATE | NLM_F_EXCL
        netlink.call(inner, RTM_NEWADDR, body, name, f"adding address {address}", flags=flags)
    except FileExistsError:
        pass


def _replace_default_route(
    inner: socket.socket, oif: int, version: int, gateway: IPv4Address | IPv6Address, name: str
) -> None:
    family = socket.AF_INET6 if version == 6 else socket.AF_INET
    body = RTMSG.pack(
        family, 0, 0, 0, RT_TABLE_MAIN, RTPROT_STATIC, RT_SCOPE_UNIVERSE, RTN_UNICAST, 0
    )
    body += netlink.nla(RTA_GATEWAY, gateway.packed) + netlink.nla(RTA_OIF, struct.pack("=I", oif))
    flags = NLM_F_CREATE | NLM_F_REPLACE
    netlink.call(
        inner, RTM_NEWROUTE, body, name, f"adding default route via {gateway}", flags=flags
    )
