"""What one sandbox can do to another, to the host and to what lies behind it, as root, against
the real kernel (issue #18): each sandbox's source filter and each network's forward policy.

The attacker is the test itself: a raw AF_PACKET socket it opens in a sandbox's network namespace
(setns, as the sandbox's root with CAP_NET_RAW could open one) sends frames built by hand
(packets.py) out of the sandbox's eth0. What a neighbour receives is read from a UDP socket the
test opens in the neighbour's netns; what the host learns, from its neighbour table. Every
negative check has its control: the same probe, genuine, gets through, so a probe that never
left cannot pass for a defence.

The `lab` fixture of test_networks.py provides the instance, the subnets (10.200.X, 10.202.X;
IPv6 fd5b:X::/64 and fd5c:X::/64 here), the namespaces that play the world, and the teardown
that fails a test leaving anything behind. Traffic stays in the test's namespaces and bridges.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Interface, IPv6Network, ip_address
from typing import Any

import packets
import pytest
import test_networks as networks
import test_sandboxes as base
from pyroute2 import IPRoute
from test_net import netns_route
from test_networks import WEB, WEB_TEXT, Lab, free_port, http_get, sandbox_unit, try_http_get
from test_sandboxes import wait_for

from sandman.kernel import netlink, nft_rules
from sandman.kernel.net_facts import derive_mac
from sandman.kernel.netlink import be32, nla
from sandman.kernel.netns import thread_in_netns_of
from sandman.kernel.nft_expr import CMP_NEQ, META_IIFNAME, META_OIFNAME, accept, ifname

pytestmark = pytest.mark.root

# The fixtures of test_sandboxes.py and test_networks.py: the session's image, the lab.
busybox_image = base.busybox_image
lab = networks.lab

QUIET = 1.0  # seconds a receiver listens for what must not arrive: a guard, not a measurement
PROBE_PORT = 40999


def network_unit6(subnet: IPv4Network, subnet6: IPv6Network | None = None) -> str:
    six = f'subnet6 = "{subnet6}"\n' if subnet6 else ""
    return f'[network]\nsubnet = "{subnet}"\n{six}'


def subnet6(lab: Lab, first: int) -> IPv6Network:
    return IPv6Network(f"fd{first:02x}:{lab.number:x}::/64")


def address6(lab: Lab, sandbox: str) -> IPv6Address:
    return IPv6Interface(lab.sm.status_of(sandbox)["network"]["address6"]).ip


def peer_mac(lab: Lab, sandbox: str) -> bytes:
    return packets.mac(derive_mac(lab.veth(sandbox), "peer"))


def bridge_mac(lab: Lab, network: str) -> bytes:
    return packets.mac(derive_mac(lab.bridge(network), "bridge"))


def send(pid: int, frame: bytes) -> None:
    """Send one raw frame out of eth0 in the netns of `pid`."""
    with thread_in_netns_of(pid):
        raw = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
        with raw:
            raw.bind(("eth0", 0))
            raw.send(frame)


@contextlib.contextmanager
def receiver(address: str, pid: int | None = None) -> Iterator[socket.socket]:
    """A UDP socket on address:PROBE_PORT, in the netns of `pid` or the host's."""
    family = socket.AF_INET6 if ip_address(address).version == 6 else socket.AF_INET
    with thread_in_netns_of(pid) if pid else contextlib.nullcontext():
        sock = socket.socket(family, socket.SOCK_DGRAM)
    with sock:
        sock.bind((address, PROBE_PORT))
        sock.settimeout(QUIET)
        yield sock


def received(sock: socket.socket, pid: int, frame: bytes) -> bytes | None:
    """What `sock` gets after the sandbox `pid` sent `frame` (its payload), or None."""
    send(pid, frame)
    try:
        return sock.recv(100)
    except TimeoutError:
        return None


def neighbour(address: str, pid: int | None = None) -> str | None:
    """The MAC that the host's (or `pid`'s netns') neighbour table holds for `address`."""
    with netns_route(pid) if pid else IPRoute() as ipr:
        family = socket.AF_INET6 if ip_address(address).version == 6 else socket.AF_INET
        for entry in ipr.neigh("dump", family=family):
            if entry.get_attr("NDA_DST") == address:
                return str(entry.get_attr("NDA_LLADDR"))
    return None


def learn(address: str, expected: bytes, pid: int | None = None) -> None:
    """Make the host (or `pid`'s netns) resolve `address`: a datagram to it, then wait for the
    entry to carry `expected`."""
    family = socket.AF_INET6 if ip_address(address).version == 6 else socket.AF_INET
    with thread_in_netns_of(pid) if pid else contextlib.nullcontext():
        sock = socket.socket(family, socket.SOCK_DGRAM)
    with sock:
        sock.sendto(b"hello", (address, 9))
    want = expected.hex(":")
    wait_for(lambda: neighbour(address, pid) == want or None, f"{address} resolved to {want}")


def three_on_a_network(lab: Lab, *, six: bool = False) -> dict[str, Any]:
    """Network lan with sandboxes a (the attacker), b (the victim), c (a neighbour)."""
    sm = lab.sm
    sm.write("lan", network_unit6(lab.subnet, subnet6(lab, 0x5B) if six else None), kind="network")
    for name in ("a", "b", "c"):
        sm.write(name, sandbox_unit("lan"))
    sm.apply()
    return {name: sm.running_init(name) for name in ("a", "b", "c")}


# ---------------------------------------------------------------------------------------------
# The source filter: a sandbox sends only as itself


def test_a_forged_source_address_reaches_neither_a_neighbour_nor_the_host(lab: Lab) -> None:
    pids = three_on_a_network(lab)
    a, b, c = (IPv4Address(str(lab.address(n).ip)) for n in ("a", "b", "c"))
    gateway = IPv4Address(str(lab.subnet[1]))
    mine, to_c, to_host = peer_mac(lab, "a"), peer_mac(lab, "c"), bridge_mac(lab, "lan")

    def frame(dst_mac: bytes, src: IPv4Address, dst: IPv4Address, src_mac: bytes = mine) -> bytes:
        datagram = packets.ipv4_udp(src, dst, PROBE_PORT, b"probe")
        return packets.ether(dst_mac, src_mac, packets.ETH_IP, datagram)

    with receiver(str(c), pids["c"]) as neighbour_side:
        assert received(neighbour_side, pids["a"], frame(to_c, b, c)) is None  # b's address
        assert received(neighbour_side, pids["a"], frame(to_c, a, c, peer_mac(lab, "b"))) is None
        assert received(neighbour_side, pids["a"], frame(to_c, a, c)) == b"probe"  # the control
    with receiver(str(gateway)) as host_side:
        assert received(host_side, pids["a"], frame(to_host, b, gateway)) is None
        assert received(host_side, pids["a"], frame(to_host, a, gateway)) == b"probe"


def test_a_forged_arp_poisons_neither_the_host_nor_a_neighbour(lab: Lab) -> None:
    """The attack of issue #18: a claims b's address with gratuitous ARP (request and reply,
    which override an entry at once); the host and c keep b's MAC for it. Nor may a name
    another MAC as its own sender."""
    pids = three_on_a_network(lab)
    a, b = (IPv4Address(str(lab.address(n).ip)) for n in ("a", "b"))
    mine, victim = peer_mac(lab, "a"), peer_mac(lab, "b")
    learn(str(b), victim)
    learn(str(b), victim, pids["c"])

    def claim(address: IPv4Address, sender: bytes = mine) -> list[bytes]:
        request = packets.arp(1, sender, address, bytes(6), address)
        reply = packets.arp(2, sender, address, sender, address)
        return [
            packets.ether(packets.BROADCAST, mine, packets.ETH_ARP, m) for m in (request, reply)
        ]

    for forged in claim(b):
        send(pids["a"], forged)
    time.sleep(QUIET)  # give a forged frame the time to be (wrongly) taken in
    assert neighbour(str(b)) == victim.hex(":")
    assert neighbour(str(b), pids["c"]) == victim.hex(":")

    # The control: the host holds a wrong, stale MAC for a; a's own claim corrects it.
    with IPRoute() as ipr:
        index = ipr.link_lookup(ifname=lab.bridge("lan"))[0]
        ipr.neigh("replace", dst=str(a), lladdr="02:00:00:00:00:01", ifindex=index, state=4)
    for genuine in claim(a):
        send(pids["a"], genuine)
    wait_for(lambda: neighbour(str(a)) == mine.hex(":") or None, "a's own claim taken in")

    # Its own address, another's MAC as the ARP sender: the host's traffic for a would go to b.
    for forged in claim(a, victim):
        send(pids["a"], forged)
    time.sleep(QUIET)
    assert neighbour(str(a)) == mine.hex(":")


def test_ipv6_a_forged_source_address_reaches_no_neighbour(lab: Lab) -> None:
    pids = three_on_a_network(lab, six=True)
    a6, b6, c6 = (address6(lab, n) for n in ("a", "b", "c"))
    mine, to_c = peer_mac(lab, "a"), peer_mac(lab, "c")

    def datagram(src: IPv6Address) -> bytes:
        udp = packets.ipv6_udp(src, c6, PROBE_PORT, b"six")
        return packets.ether(to_c, mine, packets.ETH_IP6, udp)

    with receiver(str(c6), pids["c"]) as neighbour_side:
        assert received(neighbour_side, pids["a"], datagram(b6)) is None
        assert received(neighbour_side, pids["a"], datagram(a6)) == b"six"


def test_ipv6_a_neighbour_advert_for_another_address_poisons_no_neighbour(lab: Lab) -> None:
    """a advertises b's address as its own, from its own address (the source check passes)."""
    pids = three_on_a_network(lab, six=True)
    a6, b6, c6 = (address6(lab, n) for n in ("a", "b", "c"))
    mine, victim, to_c = peer_mac(lab, "a"), peer_mac(lab, "b"), peer_mac(lab, "c")
    learn(str(b6), victim, pids["c"])
    send(
        pids["a"],
        packets.ether(to_c, mine, packets.ETH_IP6, packets.neighbor_advert(a6, c6, b6, mine)),
    )
    time.sleep(QUIET)
    assert neighbour(str(b6), pids["c"]) == victim.hex(":")

    # The control: c holds a wrong, stale MAC for a; a's advert for itself corrects it.
    learn(str(a6), mine, pids["c"])
    with netns_route(pids["c"]) as ipr:
        ipr.neigh("replace", dst=str(a6), lladdr="02:00:00:00:00:01", ifindex=_eth0(ipr), state=4)
    send(
        pids["a"],
        packets.ether(to_c, mine, packets.ETH_IP6, packets.neighbor_advert(a6, c6, a6, mine)),
    )
    wait_for(lambda: neighbour(str(a6), pids["c"]) == mine.hex(":") or None, "a's own advert")


def test_ipv6_a_router_advert_from_a_sandbox_routes_no_neighbour_through_it(lab: Lab) -> None:
    """From a's own link-local address (the source check passes), to all nodes: c, which
    accepts router adverts (a new netns's default), must not take a as a default router. The
    control: the same advert sent by the test from the host side of the bridge is taken."""
    pids = three_on_a_network(lab, six=True)
    mine = peer_mac(lab, "a")
    link_local = IPv6Address("fe80::" + _eui64(mine))
    all_nodes = packets.multicast_mac(packets.ALL_NODES)
    advert = packets.ether(
        all_nodes, mine, packets.ETH_IP6, packets.router_advert(link_local, mine)
    )
    send(pids["a"], advert)
    time.sleep(QUIET)
    assert str(link_local) not in _gateways6(pids["c"])
    _send_on_host(lab.bridge("lan"), advert)  # the bridge floods it to c, unfiltered
    wait_for(lambda: str(link_local) in _gateways6(pids["c"]) or None, "the control advert")


def _send_on_host(link: str, frame: bytes) -> None:
    with socket.socket(socket.AF_PACKET, socket.SOCK_RAW) as raw:
        raw.bind((link, 0))
        raw.send(frame)


def _eui64(raw: bytes) -> str:
    eui = bytes([raw[0] ^ 0x02]) + raw[1:3] + b"\xff\xfe" + raw[3:]
    return ":".join(eui[i : i + 2].hex() for i in range(0, 8, 2))


def _eth0(ipr: Any) -> int:
    return int(ipr.link_lookup(ifname="eth0")[0])


def _gateways6(pid: int) -> set[str]:
    with netns_route(pid) as ipr:
        routes = ipr.route("dump", family=socket.AF_INET6)
    return {str(r.get_attr("RTA_GATEWAY")) for r in routes if r.get_attr("RTA_GATEWAY")}


# ---------------------------------------------------------------------------------------------
# The forward policy: only published ports enter a network


def two_networks(lab: Lab, *, six: bool = False) -> int:
    """lan: `web` (its port 80 published on every host address at the port returned) and `db`
    (the same server, unpublished); other: `probe`. Returns the published port."""
    sm = lab.sm
    port = free_port()
    sm.write("lan", network_unit6(lab.subnet, subnet6(lab, 0x5B) if six else None), kind="network")
    sm.write(
        "other", network_unit6(lab.subnet2, subnet6(lab, 0x5C) if six else None), kind="network"
    )
    sm.write("web", sandbox_unit("lan", command=WEB, ports=[{"host": port, "sandbox": 80}]))
    sm.write("db", sandbox_unit("lan", command=WEB))
    sm.write("probe", sandbox_unit("other"))
    sm.apply()
    return port


def test_another_network_reaches_only_published_ports(lab: Lab) -> None:
    port = two_networks(lab)
    probe, web = lab.sm.running_init("probe"), lab.sm.running_init("web")
    db = str(lab.address("db").ip)
    host_side = str(lab.subnet2[1])  # the host's address on the probe's own network
    assert lab.wait_web(port, host_side, netns=probe) == f"{WEB_TEXT}\n"  # published
    with pytest.raises(TimeoutError):
        http_get(db, 80, netns=probe)  # routed through the host: not published
    assert http_get(db, 80, netns=web) == f"{WEB_TEXT}\n"  # within lan: bridged, open


def test_a_host_routed_through_this_one_reaches_only_published_ports(lab: Lab) -> None:
    port = two_networks(lab)
    client = lab.outside("client", routes=[lab.subnet])
    db = str(lab.address("db").ip)
    host_side = str(client.host_address.ip)
    assert lab.wait_web(port, host_side, netns=client.pid) == f"{WEB_TEXT}\n"
    with pytest.raises(TimeoutError):
        http_get(db, 80, netns=client.pid)


def test_ipv6_another_network_reaches_only_published_ports(lab: Lab) -> None:
    port = two_networks(lab, six=True)
    probe, web = lab.sm.running_init("probe"), lab.sm.running_init("web")
    db = str(address6(lab, "db"))
    host_side = str(subnet6(lab, 0x5C)[1])
    assert wait_for(lambda: try_http_get(host_side, port, probe), "the published port over IPv6")
    with pytest.raises(TimeoutError):
        http_get(db, 80, netns=probe)
    assert http_get(db, 80, netns=web) == f"{WEB_TEXT}\n"


# ---------------------------------------------------------------------------------------------
# A host whose own forward policy drops (Docker sets iptables' FORWARD to DROP)


@contextlib.contextmanager
def forward_drop_for(table: str, bridge: str) -> Iterator[None]:
    """Another table, as Docker's: a forward chain with policy drop. Its first rule accepts
    whatever does not touch `bridge`, so the host's other traffic (other tests) goes on."""
    chain = nft_rules.Chain("fw", "filter", 2, 10)
    made = nft_rules.new_chain(table, chain)
    with_policy = made._replace(body=made.body + nla(5, be32(0)))  # NFTA_CHAIN_POLICY: drop
    scope = (*ifname(META_IIFNAME, bridge, CMP_NEQ), *ifname(META_OIFNAME, bridge, CMP_NEQ))
    rule = nft_rules.Rule("fw", "others", (*scope, *accept()))
    netlink.batch([nft_rules.new_table(table), with_policy, nft_rules.new_rule(table, rule)], table)
    try:
        yield
    finally:
        netlink.batch([nft_rules.delete_table(table)], table)


def accept_in(table: str, bridge: str) -> None:
    """What the README says to add to such a chain: accept what comes in or goes out through the
    network's bridge."""
    rules = [
        nft_rules.Rule("fw", f"sandman {key}", (*ifname(key, bridge), *accept()))
        for key in (META_IIFNAME, META_OIFNAME)
    ]
    netlink.batch([nft_rules.new_rule(table, r) for r in rules], table)


def test_a_host_forward_policy_of_drop_is_warned_of_and_the_documented_accept_works(
    lab: Lab,
) -> None:
    sm, port, table = lab.sm, free_port(), f"{lab.prefix}_drop"
    client = lab.outside("client", routes=[lab.subnet])
    sm.write("lan", network_unit6(lab.subnet), kind="network")
    sm.write("web", sandbox_unit("lan", command=WEB, ports=[{"host": port, "sandbox": 80}]))
    sm.write("db", sandbox_unit("lan", command=WEB))
    host_side = str(client.host_address.ip)
    with forward_drop_for(table, lab.bridge("lan")):
        result = sm.apply()
        warning = f"inet {table} chain fw drops forwarded packets by default"
        assert warning in result.out + result.err, str(result)
        db = str(lab.address("db").ip)
        with pytest.raises(TimeoutError):  # the other table drops even the published port
            http_get(host_side, port, netns=client.pid)
        accept_in(table, lab.bridge("lan"))
        assert lab.wait_web(port, host_side, netns=client.pid) == f"{WEB_TEXT}\n"
        with pytest.raises(TimeoutError):  # sandman's own chain still closes the rest
            http_get(db, 80, netns=client.pid)
