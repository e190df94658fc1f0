"""sandman's bridges, over its own netlink (kernel/rtnl.py): made with a MAC of their own, up,
with the gateway address(es), forwarding on; removed when no port is left. A sandbox's veth pair
is kernel/veth.py's. Neither imports pyroute2 (50 to 130 ms to import, and about 2 ms of its
own per request): apply makes networks and attaches sandboxes without it.

Every helper is idempotent, and the errno rules that make it so live here, never in the caller:
EEXIST on create means "check what is there and converge", ENODEV on delete means "already gone".
Errors are OSError with the errno and the link's name as `filename`.
"""

from __future__ import annotations

import contextlib
import errno
import os
from ipaddress import IPv4Interface, IPv6Interface

from sandman.kernel import links, netlink, rtnl, sysctl
from sandman.kernel.net_facts import (
    IFLA_ADDRESS,
    IFLA_IFNAME,
    IFLA_INFO_KIND,
    IFLA_LINKINFO,
    derive_mac,
)


def ensure_bridge(name: str, gateway: IPv4Interface, gateway6: IPv6Interface | None = None) -> None:
    """The bridge `name` exists, is up, holds the gateway address(es) and forwards.

    Its MAC is set at creation, derived from its name: a bridge without one takes the lowest
    MAC of its ports, and changes it (and breaks every ARP cache) as sandboxes come and go.
    Forwarding is host-wide; turning IPv6 forwarding on makes interfaces with accept_ra=1 stop
    accepting router advertisements, so it is only turned on for a network with `gateway6`.
    """
    sock = rtnl.host_socket()
    index = _ensure_bridge_link(name)
    for address in (gateway, gateway6):
        if address is not None:
            rtnl.add_address(sock, index, address, name)
    sysctl.ensure(sysctl.FORWARDING[4], "1")
    if gateway6 is not None:
        sysctl.ensure(sysctl.FORWARDING[6], "1")


def _ensure_bridge_link(name: str) -> int:
    sock = rtnl.host_socket()
    info = netlink.nla(IFLA_INFO_KIND, netlink.asciiz("bridge"))
    body = rtnl.link_message(
        0,
        True,
        netlink.nla(IFLA_IFNAME, netlink.asciiz(name)),
        netlink.nla(IFLA_ADDRESS, rtnl.mac_bytes(derive_mac(name, "bridge"))),
        netlink.nla(IFLA_LINKINFO, info),
    )
    flags = rtnl.NLM_F_CREATE | rtnl.NLM_F_EXCL
    with contextlib.suppress(FileExistsError):
        netlink.call(sock, rtnl.RTM_NEWLINK, body, name, "creating bridge", flags=flags)
    link = rtnl.get_link(sock, name, name)
    if link is None:  # removed between the two calls: someone else is managing it
        raise OSError(errno.ENODEV, "bridge vanished while being created", name)
    if link.kind != "bridge":
        raise OSError(
            errno.EEXIST, f"link exists and is a {link.kind or 'device'}, not a bridge", name
        )
    if not link.up:
        rtnl.set_up(sock, link.ifindex, name, "setting bridge up")
    return link.ifindex


def remove_bridge(name: str) -> None:
    """Remove the bridge unless sandboxes are still attached (EBUSY); a missing one is success."""
    try:
        ports = os.listdir(f"/sys/class/net/{name}/brif")
    except FileNotFoundError:
        if os.path.exists(f"/sys/class/net/{name}"):
            raise OSError(errno.EINVAL, "link is not a bridge", name) from None
        return
    if ports:
        raise OSError(errno.EBUSY, f"bridge still has ports: {', '.join(sorted(ports))}", name)
    remove_link(name)


def remove_link(name: str) -> None:
    """The link is gone; ENODEV (already gone) is success. Deleting either end of a veth
    deletes both."""
    links.delete_link(name)
