"""Deleting links over plain netlink: destroy and orphan removal run it per sandbox, and
importing pyroute2 for it would cost 50 to 130 ms (net.py and veth.py make links the same way)."""

from __future__ import annotations

import errno

from sandman.kernel import netlink
from sandman.kernel.net_facts import IFLA_IFNAME
from sandman.kernel.rtnl import RTM_DELLINK, link_message


def delete_link(name: str) -> None:
    """The link is gone; ENODEV (already gone) is success. Deleting either end of a veth
    deletes both."""
    body = link_message(0, False, netlink.nla(IFLA_IFNAME, netlink.asciiz(name)))
    try:
        netlink.request(netlink.NETLINK_ROUTE, RTM_DELLINK, body, name, "deleting link")
    except OSError as exc:
        if exc.errno != errno.ENODEV:
            raise
