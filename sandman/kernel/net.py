"""Links and addresses of sandman's networks: bridges, veth pairs, and the sandbox end of a veth.

Learned from nspawn-network.c: the veth peer is born inside the sandbox's network namespace (ONE
RTM_NEWLINK, the netns in the peer's info), so it never sits in the host, not even for a moment;
the same message puts the host end on its bridge and up. The inside is then configured through a
netlink socket that was created in the sandbox's netns without forking (`netns_route`).

Every helper is idempotent, and the errno rules that make it so live here, never in the caller:
EEXIST on create means "check what is there and converge", ENODEV on delete means "already gone".
Errors are OSError with the errno and the link's name as `filename`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from typing import Any, TypeVar

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

from sandman.kernel import links, syscalls, sysctl
from sandman.kernel.net_facts import (
    AF_INET6,
    IFF_UP,
    Interface,
    derive_mac,
)

T = TypeVar("T")
PEER_NAME = "eth0"
IFA_F_NODAD = 0x02  # <linux/if_addr.h>
LOOPBACK_INDEX = 1


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


def _open_netns(pid: int) -> int:
    try:
        return os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise OSError(errno.ESRCH, "the process is gone", f"pid {pid}") from None


@contextmanager
def _netns_fd(pid: int) -> Iterator[int]:
    """The netns of `pid`, refused if it is the caller's own: configuring "the sandbox's eth0"
    in the host's netns would reconfigure the host (bubblewrap's re-checked preconditions)."""
    fd = _open_netns(pid)
    try:
        theirs, ours = os.fstat(fd), os.stat("/proc/thread-self/ns/net")
        if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
            raise OSError(errno.EINVAL, "process shares the host's network namespace", f"pid {pid}")
        yield fd
    finally:
        os.close(fd)


@contextmanager
def thread_in_netns(ns_fd: int) -> Iterator[None]:
    """This thread in the netns `ns_fd` until the block ends: a socket made there stays there,
    /proc/sys/net and /sys/class/net are that netns's."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        syscalls.setns(ns_fd, syscalls.CLONE_NEWNET)
        try:
            yield
        finally:
            syscalls.setns(own, syscalls.CLONE_NEWNET)
    finally:
        os.close(own)


@contextmanager
def thread_in_netns_of(pid: int) -> Iterator[None]:
    """This thread in the netns of process `pid` until the block ends."""
    fd = _open_netns(pid)
    try:
        with thread_in_netns(fd):
            yield
    finally:
        os.close(fd)


def _route_in(ns_fd: int) -> Any:
    """An IPRoute whose socket lives in the netns `ns_fd`: this thread joins it just long enough
    to create the socket, then returns. About ten times faster than pyroute2's
    IPRoute(netns=...), which forks a child to make the socket."""
    with thread_in_netns(ns_fd):
        return IPRoute()


@contextmanager
def netns_route(pid: int) -> Iterator[Any]:
    """A pyroute2 IPRoute talking to the network namespace of process `pid` (not the host's)."""
    with _netns_fd(pid) as fd:
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


# --- veth pairs ----------------------------------------------------------------------------------


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
    with _netns_fd(pid) as ns_fd, _route() as ipr:
        inner = _route_in(ns_fd)
        try:
            pair = _Pair(ipr, inner, host_name, f"pid {pid}")
            peer = pair.ensure(_bridge_index(bridge), ns_fd, mac)
            routes: list[tuple[Interface, IPv4Address | IPv6Address]] = [(address, gateway)]
            if address6 is not None and gateway6 is not None:
                routes.append((address6, gateway6))
            _configure_inside(inner, peer, routes, f"{PEER_NAME} of {host_name}")
        finally:
            inner.close()


def _bridge_index(bridge: str) -> int:
    """From sysfs, which shows the host's netns, where apply runs: a netlink query through
    pyroute2 cost about 2 ms per sandbox attached."""
    try:
        with open(f"/sys/class/net/{bridge}/ifindex", "rb") as handle:
            index = int(handle.read())
    except FileNotFoundError:
        raise OSError(errno.ENODEV, "bridge does not exist", bridge) from None
    if not os.path.isdir(f"/sys/class/net/{bridge}/bridge"):
        raise OSError(errno.EINVAL, "link is not a bridge", bridge)
    return index


@dataclass(frozen=True)
class _Pair:
    """A veth pair under construction: the host's and the sandbox's netlink sockets, the name."""

    ipr: Any
    inner: Any
    host_name: str
    sandbox: str  # "pid N", for errors about the sandbox's side

    def ensure(self, master: int, ns_fd: int, mac: str | None) -> int:
        """Create the pair, or keep the one already there; return the peer's index inside."""
        peer = {"ifname": PEER_NAME, "net_ns_fd": ns_fd}
        peer["address"] = mac or derive_mac(self.host_name, "peer")
        args = {"ifname": self.host_name, "kind": "veth", "peer": peer, "master": master}
        args |= {"address": derive_mac(self.host_name, "host"), "state": "up"}
        for attempt in (1, 2):
            try:
                _netlink("creating veth", self.host_name, self.ipr.link, "add", **args)
                return self._peer_index()
            except FileExistsError:
                existing = self._existing()
                if existing is not None:
                    return self._reattach(existing, master)
                if attempt == 2:
                    raise
                remove_link(self.host_name)  # a stale end whose peer is elsewhere: a new pair
        raise AssertionError("unreachable")

    def _existing(self) -> tuple[int, int] | None:
        """(host index, peer index) if `host_name` and the sandbox's eth0 are one pair."""
        host, peer = _get_link(self.ipr, self.host_name), _get_link(self.inner, PEER_NAME)
        if host is None and peer is not None:
            raise OSError(errno.EEXIST, "the sandbox already has another eth0", self.sandbox)
        if host is None or peer is None or _kind(host) != "veth" or _kind(peer) != "veth":
            return None
        if (
            host.get_attr("IFLA_LINK") != peer["index"]
            or peer.get_attr("IFLA_LINK") != host["index"]
        ):
            return None
        return int(host["index"]), int(peer["index"])

    def _reattach(self, existing: tuple[int, int], master: int) -> int:
        args = {"index": existing[0], "master": master, "state": "up"}
        _netlink("attaching veth", self.host_name, self.ipr.link, "set", **args)
        return existing[1]

    def _peer_index(self) -> int:
        peer = _get_link(self.inner, PEER_NAME)
        if peer is None:
            raise OSError(errno.ENODEV, "veth peer missing in the sandbox", self.sandbox)
        return int(peer["index"])


def _configure_inside(
    inner: Any, peer: int, routes: list[tuple[Interface, IPv4Address | IPv6Address]], name: str
) -> None:
    """lo and eth0 up; each address on eth0 and a default route via its gateway (`replace`: a
    route already there is no error)."""
    for index in (LOOPBACK_INDEX, peer):
        _netlink("setting link up", name, inner.link, "set", index=index, state="up")
    for address, gateway in routes:
        _add_address(inner, peer, address, name)
        default = "::/0" if address.version == 6 else "0.0.0.0/0"
        family = {"family": AF_INET6} if address.version == 6 else {}
        route = {"dst": default, "gateway": str(gateway), "oif": peer, **family}
        _netlink(f"adding default route via {gateway}", name, inner.route, "replace", **route)
