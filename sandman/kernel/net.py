"""Bridges over pyroute2, and a pyroute2 socket in a sandbox's netns (`netns_route`, for tests
and tools). A sandbox's veth pair is kernel/veth.py's, over sandman's own netlink: attaching a
sandbox to a network does not import pyroute2.

Every helper is idempotent, and the errno rules that make it so live here, never in the caller:
EEXIST on create means "check what is there and converge", ENODEV on delete means "already gone".
Errors are OSError with the errno and the link's name as `filename`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from ipaddress import IPv4Interface, IPv6Interface
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from sandman.kernel import links, sysctl
from sandman.kernel.net_facts import (
    IFF_UP,
    Interface,
    derive_mac,
)
from sandman.kernel.netns import netns_fd, thread_in_netns

T = TypeVar("T")
IFA_F_NODAD = 0x02  # <linux/if_addr.h>


def _netlink(op: str, name: str, call: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a pyroute2 call; turn its NetlinkError into OSError(errno, "op: strerror", name)."""
    try:
        return call(*args, **kwargs)
    except NetlinkError as e:
        raise OSError(e.code, f"{op}: {os.strerror(e.code)}", name) from None


@contextmanager
def _route() -> Iterator[Any]:
    ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def _route_in(ns_fd: int) -> Any:
    """An IPRoute whose socket lives in the netns `ns_fd`: this thread joins it just long enough
    to create the socket, then returns. About ten times faster than pyroute2's
    IPRoute(netns=...), which forks a child to make the socket."""
    with thread_in_netns(ns_fd):
        return IPRoute()


@contextmanager
def netns_route(pid: int) -> Iterator[Any]:
    """A pyroute2 IPRoute talking to the network namespace of process `pid` (not the host's)."""
    with netns_fd(pid) as fd:
        ipr = _route_in(fd)
    try:
        yield ipr
    finally:
        ipr.close()


def _get_link(ipr: Any, name: str) -> Any | None:
    try:
        return ipr.link("get", ifname=name)[0]
    except NetlinkError as e:
        if e.code == errno.ENODEV:
            return None
        raise OSError(e.code, f"getting link: {os.strerror(e.code)}", name) from None


def _kind(msg: Any) -> str | None:
    info = msg.get_attr("IFLA_LINKINFO")
    return None if info is None else info.get_attr("IFLA_INFO_KIND")


def _add_address(ipr: Any, index: int, address: Interface, name: str) -> None:
    """Add `address` unless the link already holds it (EEXIST); other addresses stay."""
    args: dict[str, Any] = {"index": index, "address": str(address.ip)}
    args["prefixlen"] = address.network.prefixlen
    if address.version == 6:
        # sandman hands out unique addresses, so DAD would only hold the address back a second.
        args["IFA_FLAGS"] = IFA_F_NODAD
    elif address.network.prefixlen < 31:
        args["broadcast"] = str(address.network.broadcast_address)
    with suppress(FileExistsError):
        _netlink(f"adding address {address}", name, ipr.addr, "add", **args)


# --- bridges -------------------------------------------------------------------------------------


def ensure_bridge(name: str, gateway: IPv4Interface, gateway6: IPv6Interface | None = None) -> None:
    """The bridge `name` exists, is up, holds the gateway address(es) and forwards.

    Its MAC is set at creation, derived from its name: a bridge without one takes the lowest
    MAC of its ports, and changes it (and breaks every ARP cache) as sandboxes come and go.
    Forwarding is host-wide; turning IPv6 forwarding on makes interfaces with accept_ra=1 stop
    accepting router advertisements, so it is only turned on for a network with `gateway6`.
    """
    with _route() as ipr:
        index = _ensure_bridge_link(ipr, name)
        for address in (gateway, gateway6):
            if address is not None:
                _add_address(ipr, index, address, name)
    sysctl.ensure(sysctl.FORWARDING[4], "1")
    if gateway6 is not None:
        sysctl.ensure(sysctl.FORWARDING[6], "1")


def _ensure_bridge_link(ipr: Any, name: str) -> int:
    mac = derive_mac(name, "bridge")
    args = {"ifname": name, "kind": "bridge", "address": mac, "state": "up"}
    with suppress(FileExistsError):
        _netlink("creating bridge", name, ipr.link, "add", **args)
    link = _get_link(ipr, name)
    if link is None:  # removed between the two calls: someone else is managing it
        raise OSError(errno.ENODEV, "bridge vanished while being created", name)
    if _kind(link) != "bridge":
        what = _kind(link) or "device"
        raise OSError(errno.EEXIST, f"link exists and is a {what}, not a bridge", name)
    if not link["flags"] & IFF_UP:
        _netlink("setting bridge up", name, ipr.link, "set", index=link["index"], state="up")
    return int(link["index"])


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
