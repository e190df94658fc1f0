"""Deleting links over plain netlink: destroy and orphan removal run it per sandbox, and
importing pyroute2 for it would cost 50 to 130 ms (net.py and veth.py make links the same way)."""

from __future__ import annotations

import errno
import socket

from sandman.kernel import netlink
from sandman.kernel.net_facts import IFINFOMSG

RTM_DELLINK = 17  # <linux/rtnetlink.h>
IFLA_IFNAME = 3  # <linux/if_link.h>


def delete_link(name: str) -> None:
    """The link is gone; ENODEV (already gone) is success. Deleting either end of a veth
    deletes both."""
    body = IFINFOMSG.pack(socket.AF_UNSPEC, 0, 0, 0, 0)
    body += netlink.nla(IFLA_IFNAME, netlink.asciiz(name))
    try:
        netlink.request(netlink.NETLINK_ROUTE, RTM_DELLINK, body, name, "deleting link")
    except OSError as exc:
        if exc.errno != errno.ENODEV:
            raise
