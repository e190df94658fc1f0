"""Tests of sandman.kernel.net and sandman.kernel.nat against the real kernel, as root.

Each test gets an instance tag `smt<4 hex>` (links `smt1a2b-NAME`, bridges `smt1a2bb-NAME`, the
table `inet sandman_smt1a2b`), 10.x and fdxx: subnets of its own, and "sandboxes": child processes
in a private network namespace, each serving TCP on port 8080 and answering "NAME PEER-ADDRESS".
Traffic stays on those namespaces, the test's bridges and the host's loopback.

The `env` fixture holds a host-wide lock (the forwarding sysctls are host-wide), and afterwards
removes what the test registered (through sandman's own helpers, where "already gone" is fine),
kills the children and puts the forwarding sysctls back; then it looks for leftovers without
sandman's code (/sys/class/net, a raw nf_tables table dump), scrubs them, and fails the test.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import random
import secrets
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network, IPv6Interface, IPv6Network, ip_address
from pathlib import Path
from typing import Any

import pytest
from pyroute2 import IPRoute
from pyroute2.nftables.main import NFTables

from sandman.kernel import nat, net, net_dump
from sandman.kernel.net_facts import BASE, NAT, PORT, derive_mac
from sandman.kernel.netns import thread_in_netns_of
from sandman.kernel.veth import create_veth
from sandman.units.model import PortForward
from sandman.units.names import bridge_name, veth_name

REPO = Path(__file__).resolve().parents[2]
SERVE_PORT = 8080
TIMEOUT = 3.0  # a guard against hanging, never an assertion about speed
LOCK = "/run/lock/sandman-test-net.lock"
SYSCTLS = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")


@contextlib.contextmanager
def sysctl_lock() -> Iterator[None]:
    """Hold the host-wide lock on the forwarding sysctls. /run/lock is a distribution's habit
    (systemd-tmpfiles makes it), not the kernel's: a bare host or guest may lack it, so the
    directory is made first."""
    os.makedirs(os.path.dirname(LOCK), mode=0o755, exist_ok=True)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# The "sandbox": a new netns (before anything else, so the server lives in it), then a dual-stack
# TCP server. PDEATHSIG: if pytest dies, the children and with them their namespaces go too.
CHILD = f"""
import signal, socket, sys
from sandman.kernel import syscalls
syscalls.prctl(syscalls.PR_SET_PDEATHSIG, signal.SIGKILL)
syscalls.unshare(syscalls.CLONE_NEWNET)
server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
server.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("::", {SERVE_PORT}))
server.listen(16)
print("ready", flush=True)
while True:
    conn, peer = server.accept()
    conn.sendall(f"{{sys.argv[1]}} {{peer[0].removeprefix('::ffff:')}}".encode())
    conn.close()
"""


@dataclass
class Network:
    bridge: str
    gateway: IPv4Interface
    gateway6: IPv6Interface


@dataclass
class Sandbox:
    name: str
    veth: str
    process: subprocess.Popen[str]
    address: IPv4Interface
    address6: IPv6Interface

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class NetEnv:
    tag: str
    links: list[str] = field(default_factory=list)  # removed in reverse order
    tables: list[str] = field(default_factory=list)  # instance tags
    children: list[subprocess.Popen[str]] = field(default_factory=list)
    _net: int = field(default_factory=lambda: random.randrange(100, 250))
    _net6: int = field(default_factory=lambda: random.randrange(0x100, 0xFFFF))

    def network(self, name: str, number: int) -> Network:
        bridge = bridge_name(self.tag, name)
        self.links.insert(0, bridge)
        self.tables.append(self.tag)
        v4 = IPv4Network(f"10.{self._net}.{number}.0/24")
        v6 = IPv6Network(f"fd5a:{self._net6:x}:{number}::/64")
        network = Network(bridge, IPv4Interface(f"{v4[1]}/24"), IPv6Interface(f"{v6[1]}/64"))
        net.ensure_bridge(network.bridge, network.gateway, network.gateway6)
        return network

    def child(self, name: str) -> subprocess.Popen[str]:
        process = subprocess.Popen(
            [sys.executable, "-c", CHILD, name], cwd=REPO, stdout=subprocess.PIPE, text=True
        )
        self.children.append(process)
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        return process

    def sandbox(self, name: str, network: Network, host: int) -> Sandbox:
        """A child in its own netns, attached to `network` with address number `host`."""
        veth = veth_name(self.tag, name)
        self.links.append(veth)
        v4, v6 = network.gateway.network, network.gateway6.network
        address, address6 = IPv4Interface(f"{v4[host]}/24"), IPv6Interface(f"{v6[host]}/64")
        sandbox = Sandbox(name, veth, self.child(name), address, address6)
        create_veth(veth, sandbox.pid, network.bridge, address, network.gateway.ip,
                        address6=address6, gateway6=network.gateway6.ip)  # fmt: skip
        return sandbox


FAMILIES = (1, 7)  # the instance's tables: inet (NAT, forward policy), bridge (source filters)


def _table_names() -> set[tuple[int, str]]:
    """The host's inet and bridge tables, read without sandman's code."""
    found = set()
    for family in FAMILIES:
        nft = NFTables(nfgen_family=family)
        try:
            found |= {(family, t.get_attr("NFTA_TABLE_NAME")) for t in nft.get_tables()}
        finally:
            nft.close()
    return found


def _scrub(links: list[str], tables: set[tuple[int, str]]) -> None:
    with IPRoute() as ipr:
        for name in links:
            with contextlib.suppress(Exception):
                ipr.link("del", ifname=name)
    for family, table in tables:
        nft = NFTables(nfgen_family=family)
        try:
            with contextlib.suppress(Exception):
                nft.table("del", name=table)
        finally:
            nft.close()


def _teardown(env: NetEnv) -> list[str]:
    problems = []
    for tag in dict.fromkeys(env.tables):
        try:
            nat.remove_table(tag)
        except OSError as e:
            problems.append(f"remove_table({tag}): {e}")
    for link in reversed(env.links):
        try:
            net.remove_link(link)
        except OSError as e:
            problems.append(f"remove_link({link}): {e}")
    for child in env.children:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    return problems


@pytest.fixture
def env() -> Iterator[NetEnv]:
    # The forwarding sysctls are host-wide: a second pytest run on the same host (they happen)
    # must not put them back while this test relies on them.
    with sysctl_lock():
        yield from _env()


def _env() -> Iterator[NetEnv]:
    saved = {path: Path(path).read_text() for path in SYSCTLS}
    env = NetEnv(tag=f"smt{secrets.token_hex(2)}")
    try:
        yield env
    finally:
        problems = _teardown(env)
        for path, value in saved.items():
            if Path(path).read_text() != value:
                Path(path).write_text(value)
        links = sorted(n for n in os.listdir("/sys/class/net") if n.startswith(env.tag))
        tables = {t for t in _table_names() if t[1].startswith(nat.table_name(env.tag))}
        _scrub(links, tables)
        left = [*(f"link {n}" for n in links), *(f"table {t}" for _, t in sorted(tables))]
        if problems or left:
            pytest.fail("; ".join([*problems, *(f"left behind: {x}" for x in left)]))


def fetch(address: Any, port: int = SERVE_PORT, from_pid: int | None = None) -> str:
    """Connect to address:port (from the netns of `from_pid`, or the host) and read the reply."""
    family = socket.AF_INET6 if ip_address(str(address)).version == 6 else socket.AF_INET
    with thread_in_netns_of(from_pid) if from_pid else contextlib.nullcontext():
        sock = socket.socket(family, socket.SOCK_STREAM)
    with sock:
        sock.settimeout(TIMEOUT)
        sock.connect((str(address), port))
        return sock.makefile().read()


@contextlib.contextmanager
def netns_route(pid: int) -> Iterator[Any]:
    """A pyroute2 IPRoute whose socket lives in the netns of `pid`: what the tests read the
    inside with, by another library than the one that configured it."""
    with thread_in_netns_of(pid):
        ipr = IPRoute()
    try:
        yield ipr
    finally:
        ipr.close()


def free_port() -> int:
    return random.randrange(40000, 60000)


def inside(pid: int) -> dict[str, Any]:
    """The sandbox's links, addresses and default routes, read through a socket in its netns."""
    with netns_route(pid) as ipr:
        links = {m.get_attr("IFLA_IFNAME"): m for m in ipr.link("dump")}
        addrs = [
            (m["index"], f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}") for m in ipr.addr("dump")
        ]
        routes = [ipr.route("dump", family=f, dst_len=0) for f in (socket.AF_INET, socket.AF_INET6)]
    gateways = {r.get_attr("RTA_GATEWAY") for family in routes for r in family if r["dst_len"] == 0}
    return {"links": links, "addresses": addrs, "gateways": gateways - {None}}


# --- bridges -------------------------------------------------------------------------------------


@pytest.mark.root
def test_bridge_is_up_with_its_gateways_and_forwards(env: NetEnv) -> None:
    lan = env.network("lan", 1)
    net.ensure_bridge(lan.bridge, lan.gateway, lan.gateway6)  # again: nothing changes
    fact = net_dump.dump_links(env.tag)[lan.bridge]
    assert (fact.kind, fact.up, fact.master) == ("bridge", True, None)
    assert fact.mac == derive_mac(lan.bridge, "bridge")
    addresses = net_dump.dump_addresses()[fact.ifindex]
    assert addresses.count(lan.gateway) == 1 and addresses.count(lan.gateway6) == 1
    assert Path(SYSCTLS[0]).read_text().strip() == "1"
    assert Path(SYSCTLS[1]).read_text().strip() == "1"


@pytest.mark.root
def test_bridge_keeps_other_addresses_and_refuses_a_non_bridge(env: NetEnv) -> None:
    lan = env.network("lan", 1)
    index = net_dump.dump_links(env.tag)[lan.bridge].ifindex
    extra = IPv4Interface(f"{lan.gateway.network[9]}/24")
    with IPRoute() as ipr:
        ipr.addr("add", index=index, address=str(extra.ip), prefixlen=24)
    net.ensure_bridge(lan.bridge, lan.gateway, lan.gateway6)
    assert {extra, lan.gateway} <= set(net_dump.dump_addresses()[index])

    other = bridge_name(env.tag, "other")
    env.links.append(other)
    with IPRoute() as ipr:  # this kernel has no dummy links: a veth is as good a non-bridge
        ipr.link("add", ifname=other, kind="veth", peer=veth_name(env.tag, "other"))
    with pytest.raises(OSError, match="link exists and is a veth, not a bridge") as caught:
        net.ensure_bridge(other, lan.gateway)
    assert (caught.value.errno, caught.value.filename) == (errno.EEXIST, other)
    with pytest.raises(OSError, match="link is not a bridge") as caught:
        net.remove_bridge(other)
    assert (caught.value.errno, caught.value.filename) == (errno.EINVAL, other)


@pytest.mark.root
def test_remove_link_and_bridge_are_idempotent(env: NetEnv) -> None:
    lan = env.network("lan", 1)
    a = env.sandbox("a", lan, 2)
    with pytest.raises(OSError, match=f"bridge still has ports: {a.veth}") as caught:
        net.remove_bridge(lan.bridge)
    assert (caught.value.errno, caught.value.filename) == (errno.EBUSY, lan.bridge)
    net.remove_link(a.veth)
    net.remove_link(a.veth)
    assert "eth0" not in inside(a.pid)["links"]  # deleting the host end took the peer along
    net.remove_bridge(lan.bridge)
    net.remove_bridge(lan.bridge)
    assert net_dump.dump_links(env.tag) == {}


# --- veth pairs ----------------------------------------------------------------------------------


@pytest.mark.root
def test_veth_peer_is_born_in_the_sandbox_and_configured(env: NetEnv) -> None:
    lan = env.network("lan", 1)
    a = env.sandbox("a", lan, 2)
    links = net_dump.dump_links(env.tag)
    host_end = links[a.veth]
    assert (host_end.kind, host_end.up, host_end.master) == (
        "veth",
        True,
        links[lan.bridge].ifindex,
    )
    assert host_end.mac == derive_mac(a.veth, "host") and host_end.peer_netns_id is not None
    assert derive_mac(a.veth, "peer") not in {f.mac for f in net_dump.dump_links("").values()}

    seen = inside(a.pid)
    assert set(seen["links"]) == {"lo", "eth0"}
    eth0 = seen["links"]["eth0"]
    assert eth0["flags"] & 1 and seen["links"]["lo"]["flags"] & 1  # IFF_UP
    assert eth0.get_attr("IFLA_ADDRESS") == derive_mac(a.veth, "peer")
    assert (eth0["index"], str(a.address)) in seen["addresses"]
    assert (eth0["index"], str(a.address6)) in seen["addresses"]
    assert seen["gateways"] == {str(lan.gateway.ip), str(lan.gateway6.ip)}


@pytest.mark.root
def test_create_veth_again_keeps_the_pair_and_repairs_it(env: NetEnv) -> None:
    lan = env.network("lan", 1)
    a = env.sandbox("a", lan, 2)
    index = net_dump.dump_links(env.tag)[a.veth].ifindex
    with IPRoute() as ipr:
        ipr.link("set", index=index, master=0, state="down")  # drift: off the bridge, down
    create_veth(a.veth, a.pid, lan.bridge, a.address, lan.gateway.ip)
    fact = net_dump.dump_links(env.tag)[a.veth]
    assert (fact.ifindex, fact.up, fact.master) == (
        index,
        True,
        net_dump.dump_links(env.tag)[lan.bridge].ifindex,
    )

    net.remove_link(a.veth)  # drift: the pair is gone
    create_veth(a.veth, a.pid, lan.bridge, a.address, lan.gateway.ip)
    assert a.veth in net_dump.dump_links(env.tag)
    assert fetch(a.address.ip) == f"a {lan.gateway.ip}"


@pytest.mark.root
def test_create_veth_replaces_a_stale_host_end(env: NetEnv) -> None:
    lan = env.network("lan", 1)
    veth, other = veth_name(env.tag, "a"), veth_name(env.tag, "stale")
    env.links += [veth, other]
    with IPRoute() as ipr:
        ipr.link("add", ifname=veth, kind="veth", peer=other)  # its peer is in the host
    child = env.child("a")
    address = IPv4Interface(f"{lan.gateway.network[2]}/24")
    create_veth(veth, child.pid, lan.bridge, address, lan.gateway.ip)
    links = net_dump.dump_links(env.tag)
    assert other not in links and links[veth].peer_netns_id is not None
    assert fetch(address.ip) == f"a {lan.gateway.ip}"


@pytest.mark.root
def test_create_veth_errors_name_what_failed(env: NetEnv) -> None:
    lan = env.network("lan", 1)
    veth, address = veth_name(env.tag, "a"), IPv4Interface(f"{lan.gateway.network[2]}/24")
    env.links.append(veth)
    gone = subprocess.Popen(["true"])
    gone.wait()
    cases = [
        (gone.pid, lan.bridge, errno.ESRCH, f"pid {gone.pid}", "the process is gone"),
        (os.getpid(), lan.bridge, errno.EINVAL, f"pid {os.getpid()}", "shares the host's network"),
        (
            env.child("a").pid,
            "nosuchbridge0",
            errno.ENODEV,
            "nosuchbridge0",
            "bridge does not exist",
        ),
    ]
    for pid, bridge, code, filename, message in cases:
        with pytest.raises(OSError, match=message) as caught:
            create_veth(veth, pid, bridge, address, lan.gateway.ip)
        assert (caught.value.errno, caught.value.filename) == (code, filename)
    assert veth not in net_dump.dump_links(env.tag)


@pytest.mark.root
def test_sandboxes_reach_each_other_across_the_bridge(env: NetEnv) -> None:
    lan = env.network("lan", 1)
    a, b = env.sandbox("a", lan, 2), env.sandbox("b", lan, 3)
    assert fetch(b.address.ip, from_pid=a.pid) == f"b {a.address.ip}"
    assert fetch(a.address.ip, from_pid=b.pid) == f"a {b.address.ip}"
    assert fetch(b.address6.ip, from_pid=a.pid) == f"b {a.address6.ip}"


# --- NAT and port forwards -----------------------------------------------------------------------


def rules_of(tag: str) -> dict[tuple[str, str, str], list[int]]:
    """(kind, owner, spec) -> the handles of the rules with that comment."""
    found: dict[tuple[str, str, str], list[int]] = {}
    for rule in nat.dump_rules(tag):
        found.setdefault((rule.kind, rule.owner, rule.spec), []).append(rule.handle)
    return found


@pytest.mark.root
def test_nat_rules_are_dumped_and_left_alone_when_unchanged(env: NetEnv) -> None:
    lan = env.network("lan", 1)
    v4, v6 = lan.gateway.network, lan.gateway6.network
    nat.ensure_nat(env.tag, "lan", v4, True, v6)
    rules = rules_of(env.tag)
    assert set(rules) == {(BASE, "guard", "127.0.0.0/8"), (BASE, "localnet", "127.0.0.0/8"),
                          (NAT, "lan", str(v4)), (NAT, "lan", str(v6))}  # fmt: skip
    nat.ensure_nat(env.tag, "lan", v4, True, v6)
    assert rules_of(env.tag) == rules  # same handles: nothing was rewritten

    other = f"{env.tag}x"  # a second instance on the same host
    env.tables.append(other)
    nat.ensure_nat(other, "lan", v4, True)
    nat.remove_table(other)
    nat.remove_table(other)
    assert rules_of(env.tag) == rules and nat.dump_rules(other) == ()

    nat.ensure_nat(env.tag, "lan", v4, False, v6)
    assert {k for k in rules_of(env.tag) if k[0] == NAT} == set()


@pytest.mark.root
def test_masquerade_rewrites_the_source_leaving_the_subnet(env: NetEnv) -> None:
    lan, up = env.network("lan", 1), env.network("up", 2)
    a, server = env.sandbox("a", lan, 2), env.sandbox("server", up, 2)
    nat.ensure_nat(env.tag, "lan", lan.gateway.network, True)
    assert fetch(server.address.ip, from_pid=a.pid) == f"server {up.gateway.ip}"
    nat.ensure_nat(env.tag, "lan", lan.gateway.network, False)
    assert fetch(server.address.ip, from_pid=a.pid) == f"server {a.address.ip}"


@pytest.mark.root
def test_port_forwards_reach_the_sandbox_from_the_host(env: NetEnv) -> None:
    lan = env.network("lan", 1)
    a = env.sandbox("a", lan, 2)
    loop, every = free_port(), free_port()
    ports = [PortForward(host=loop, sandbox=SERVE_PORT, host_address="127.0.0.1"),
             PortForward(host=every, sandbox=SERVE_PORT)]  # fmt: skip
    nat.ensure_ports(env.tag, "a", a.address.ip, ports, bridge=lan.bridge, address6=a.address6.ip)
    assert fetch("127.0.0.1", loop) == f"a {lan.gateway.ip}"  # masqueraded off loopback
    assert fetch(lan.gateway.ip, every) == f"a {lan.gateway.ip}"  # any local address
    assert fetch(lan.gateway6.ip, every) == f"a {lan.gateway6.ip}"
    assert Path(f"/proc/sys/net/ipv4/conf/{lan.bridge}/route_localnet").read_text() == "1\n"

    rules = rules_of(env.tag)
    target, target6 = f"{a.address.ip}:{SERVE_PORT}", f"[{a.address6.ip}]:{SERVE_PORT}"
    assert len(rules[(PORT, "a", f"tcp 127.0.0.1:{loop} {target}")]) == 2  # prerouting, output
    assert len(rules[(PORT, "a", f"tcp *:{every} {target6}")]) == 2
    nat.ensure_ports(env.tag, "a", a.address.ip, ports, bridge=lan.bridge, address6=a.address6.ip)
    assert rules_of(env.tag) == rules

    moved = [PortForward(host=loop + 1, sandbox=SERVE_PORT, host_address="127.0.0.1")]
    nat.ensure_ports(env.tag, "a", a.address.ip, moved, bridge=lan.bridge)
    assert fetch("127.0.0.1", loop + 1) == f"a {lan.gateway.ip}"
    with pytest.raises(ConnectionRefusedError):
        fetch("127.0.0.1", loop)
    nat.remove_ports(env.tag, "a")
    nat.remove_ports(env.tag, "a")
    assert {k for k in rules_of(env.tag) if k[0] == PORT} == set()
    with pytest.raises(ConnectionRefusedError):
        fetch("127.0.0.1", loop + 1)


@pytest.mark.root
def test_guard_keeps_the_host_loopback_from_sandboxes(env: NetEnv) -> None:
    """route_localnet lets the bridge route 127.0.0.0/8; the table's guard must stop a sandbox
    that sends to 127.0.0.1 through the host from reaching the host's loopback-only services."""
    lan = env.network("lan", 1)
    a = env.sandbox("a", lan, 2)
    secret = socket.create_server(("127.0.0.1", 0))
    secret.settimeout(TIMEOUT)
    port = secret.getsockname()[1]
    forward = [PortForward(host=free_port(), sandbox=SERVE_PORT, host_address="127.0.0.1")]
    nat.ensure_ports(env.tag, "a", a.address.ip, forward, bridge=lan.bridge)
    _route_loopback_via_host(a, lan)
    with secret:
        with pytest.raises(TimeoutError):
            connect(a.pid, port)
        nat.remove_table(env.tag)  # the control: without the guard the same packets get through
        connect(a.pid, port)


def connect(pid: int, port: int) -> None:
    """Open a TCP connection from the netns of `pid` to 127.0.0.1:port, and close it."""
    with thread_in_netns_of(pid):
        probe = socket.socket()
    with probe:
        probe.settimeout(TIMEOUT)
        probe.connect(("127.0.0.1", port))


def _route_loopback_via_host(sandbox: Sandbox, network: Network) -> None:
    """What a sandbox with CAP_NET_ADMIN in its netns could do: send 127.0.0.1 to the host."""
    with thread_in_netns_of(sandbox.pid):
        for name in ("all", "eth0"):
            Path(f"/proc/sys/net/ipv4/conf/{name}/route_localnet").write_text("1")
    with netns_route(sandbox.pid) as ipr:
        ipr.addr("del", index=1, address="127.0.0.1", prefixlen=8)
        eth0 = ipr.link("get", ifname="eth0")[0]["index"]
        ipr.route("add", dst="127.0.0.0/8", gateway=str(network.gateway.ip), oif=eth0)
