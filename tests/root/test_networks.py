"""Networks applied by sandman against the real kernel, as root: bridges, veth pairs, addresses,
names, NAT and port forwards, their drift repaired and their changes reconciled.

sandman is driven through its command line, as in test_sandboxes.py, whose `Sandman` instance and
helpers are reused: each test has a private state, image, log and unit dir, so its instance tag
(and with it its links `TAG-NAME`, bridges `TAGb-NAME` and table `inet sandman_TAG`) is its own.

Each test takes subnets of its own: sandbox networks in 10.200.X.0/24 and 10.202.X.0/24, and /30
links to the namespaces it makes itself in 10.201.X.0/24, X chosen so that no route of the host
touches them. Those namespaces play the rest of the world: a "client" that connects to the host's
port forwards from outside, an "uplink" that records the address a connection comes from. They are
child processes started with `unshare --net`, linked to the host by a veth pair. Traffic stays in
the test's namespaces, its bridges and the host's loopback.

The `lab` fixture holds the lock test_net.py holds (the forwarding sysctls are host-wide and that
module puts them back), and afterwards stops the test's servers and namespaces, runs `sandman
destroy` on every unit dir, then fails the test if a process, cgroup or record of the instance is
left (as test_sandboxes.py's `sm` does), or any link, address, route or nf_tables rule of the
instance or of the test, looked up without sandman's code; whatever it finds it scrubs.

No assertion is about time; the waits are guards against hanging, nothing more.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Interface, IPv4Network
from pathlib import Path
from typing import Any

import pytest
import test_sandboxes as base
from pyroute2 import IPRoute
from pyroute2.nftables.main import NFTables
from test_net import SYSCTLS, sysctl_lock
from test_sandboxes import Result, Sandman, alive, cgroup_dirs, unit, wait_for

from sandman.kernel import nat, net_dump, netlink, nft_rules
from sandman.kernel.net_facts import ANTISPOOF, FORWARD, NAT, PORT
from sandman.kernel.netns import thread_in_netns_of
from sandman.units.names import bridge_name, instance_tag, veth_name

pytestmark = pytest.mark.root

# The session's busybox image, the fixture of test_sandboxes.py made available here.
busybox_image = base.busybox_image

TIMEOUT = 3.0  # seconds, for one connection: a guard against hanging
WEB_TEXT = "hello from web"
WEB = (
    "sh",
    "-c",
    f"mkdir -p /www && echo '{WEB_TEXT}' > /www/index.html && exec httpd -f -p 80 -h /www",
)

# An outside namespace: `unshare --net` runs this in a new netns; it serves TCP on argv[1] and
# answers each connection with the address it came from. PDEATHSIG: it goes if pytest dies.
OUTSIDE = """
import ctypes, signal, socket, sys
ctypes.CDLL(None).prctl(1, signal.SIGKILL)
server = socket.create_server(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
while True:
    conn, peer = server.accept()
    with conn:
        conn.sendall(f"{peer[0]}\\n".encode())
"""


# ---------------------------------------------------------------------------------------------
# The host, read without sandman


FAMILIES = {"inet": 1, "bridge": 7}  # the instance's two tables: NAT, forward policy; filters


def table_names(family: str = "inet") -> set[str]:
    """The host's nf_tables tables of `family`."""
    nft = NFTables(nfgen_family=FAMILIES[family])
    try:
        return {t.get_attr("NFTA_TABLE_NAME") for t in nft.get_tables()}
    finally:
        nft.close()


def host_links(*prefixes: str) -> list[str]:
    return sorted(n for n in os.listdir("/sys/class/net") if n.startswith(prefixes))


def host_networks() -> list[tuple[str, IPv4Network]]:
    """What of the host's IPv4 routes and addresses lies in a network: (description, network)."""
    found = []
    with IPRoute() as ipr:
        for route in ipr.route("dump", family=socket.AF_INET):
            dst = route.get_attr("RTA_DST")
            if dst and route["dst_len"]:
                prefix = f"{dst}/{route['dst_len']}"
                found.append((f"route {prefix}", IPv4Network(prefix, strict=False)))
        for addr in ipr.addr("dump", family=socket.AF_INET):
            address = addr.get_attr("IFA_ADDRESS")
            found.append((f"address {address}/{addr['prefixlen']}", IPv4Network(f"{address}/32")))
    return found


def free_port() -> int:
    """A TCP port nothing on the host listens on, outside the ephemeral range."""
    for _ in range(100):
        port = random.randrange(20000, 30000)
        with socket.socket() as probe:
            try:
                probe.bind(("0.0.0.0", port))
            except OSError:
                continue
            return port
    pytest.fail("no free TCP port in 20000..29999")


def http_get(address: str, port: int, netns: int | None = None) -> str:
    """GET / from address:port (from the network namespace of process `netns`, else the host's);
    the body."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with thread_in_netns_of(netns) if netns else contextlib.nullcontext():
        sock = socket.socket(family)
    with sock:
        sock.settimeout(TIMEOUT)
        sock.connect((address, port))
        sock.sendall(b"GET / HTTP/1.0\r\n\r\n")
        reply = sock.makefile("rb").read()
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.") and b" 200 " in head.split(b"\r\n")[0], reply
    return body.decode()


def try_http_get(address: str, port: int, netns: int | None = None) -> str | None:
    try:
        return http_get(address, port, netns)
    except OSError:
        return None


# ---------------------------------------------------------------------------------------------
# Units


def network_unit(subnet: IPv4Network, *, nat: bool = False) -> str:
    return f'[network]\nsubnet = "{subnet}"\nnat = {str(nat).lower()}\n'


def sandbox_unit(
    network: str,
    *,
    command: Sequence[str] = base.SLEEP,
    address: str = "auto",
    ports: Sequence[dict[str, Any]] = (),
    sandbox: str = "",
) -> str:
    forwards = ", ".join(
        "{ " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in port.items()) + " }" for port in ports
    )
    return unit(
        command=command,
        sandbox=sandbox,
        rest=f'[network]\nattach = "{network}"\naddress = "{address}"\nports = [{forwards}]\n',
    )


# ---------------------------------------------------------------------------------------------
# The lab: one sandman instance, the test's subnets, its namespaces and servers


@dataclass
class Outside:
    """A network namespace of the test's own (a child process), linked to the host by a veth
    pair: `host_address` on the host's end, `address` on `eth0` inside; it serves TCP on `port`,
    answering with the peer's address."""

    process: subprocess.Popen[str]
    link: str
    host_address: IPv4Interface
    address: IPv4Interface
    port: int

    @property
    def pid(self) -> int:
        return self.process.pid

    def ask(self, sm: Sandman, sandbox: str) -> str:
        """From inside `sandbox`: connect to this namespace's server; the address it saw."""
        result = sm.exec(sandbox, "nc", "-w", "3", str(self.address.ip), str(self.port))
        return result.out.strip()


@dataclass
class Lab:
    sm: Sandman
    number: int
    prefix: str = field(default_factory=lambda: f"snt{secrets.token_hex(2)}")  # test's links
    outsides: list[Outside] = field(default_factory=list)
    stops: list[Callable[[], None]] = field(default_factory=list)

    @property
    def subnet(self) -> IPv4Network:
        return IPv4Network(f"10.200.{self.number}.0/24")

    @property
    def subnet2(self) -> IPv4Network:
        return IPv4Network(f"10.202.{self.number}.0/24")

    @property
    def links_subnet(self) -> IPv4Network:
        return IPv4Network(f"10.201.{self.number}.0/24")

    @property
    def subnets(self) -> tuple[IPv4Network, ...]:
        return (self.subnet, self.links_subnet, self.subnet2)

    @property
    def tag(self) -> str:
        return self.sm.tag

    def bridge(self, network: str) -> str:
        return bridge_name(self.tag, network)

    def veth(self, sandbox: str) -> str:
        return veth_name(self.tag, sandbox)

    def address(self, sandbox: str) -> IPv4Interface:
        return IPv4Interface(self.sm.status_of(sandbox)["network"]["address"])

    # -- namespaces and servers of the test

    def outside(self, name: str, routes: Sequence[IPv4Network] = ()) -> Outside:
        """A new namespace on the next /30 of the links subnet; `routes` go back via the host."""
        slot = list(self.links_subnet.subnets(new_prefix=30))[len(self.outsides)]
        host_address, address = (IPv4Interface(f"{slot[i]}/30") for i in (1, 2))
        port = free_port()
        process = subprocess.Popen(
            ["unshare", "--net", sys.executable, "-c", OUTSIDE, str(port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        outside = Outside(process, f"{self.prefix}-{name}", host_address, address, port)
        self.outsides.append(outside)
        assert process.stdout is not None and process.stdout.readline() == "ready\n"
        ns_fd = os.open(f"/proc/{process.pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            with IPRoute() as ipr:
                peer = {"ifname": "eth0", "net_ns_fd": ns_fd}
                ipr.link("add", ifname=outside.link, kind="veth", peer=peer)
                index = ipr.link_lookup(ifname=outside.link)[0]
                ipr.addr("add", index=index, address=str(host_address.ip), prefixlen=30)
                ipr.link("set", index=index, state="up")
        finally:
            os.close(ns_fd)
        with thread_in_netns_of(process.pid):
            inner = IPRoute()
        with inner:
            eth0 = inner.link_lookup(ifname="eth0")[0]
            inner.link("set", index=1, state="up")
            inner.link("set", index=eth0, state="up")
            inner.addr("add", index=eth0, address=str(address.ip), prefixlen=30)
            for route in routes:
                inner.route("add", dst=str(route), gateway=str(host_address.ip), oif=eth0)
        return outside

    def tcp_server(self, address: str) -> int:
        """A TCP server on the host at `address`, answering with the peer's address; its port."""
        server = socket.create_server((address, 0))
        server.settimeout(0.05)
        stop = threading.Event()

        def serve() -> None:
            with server:
                while not stop.is_set():
                    try:
                        conn, peer = server.accept()
                    except TimeoutError:
                        continue
                    with conn:
                        conn.sendall(f"{peer[0]}\n".encode())

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(timeout=5)

        self.stops.append(halt)
        return int(server.getsockname()[1])

    # -- checks used by several tests

    def ping(self, sandbox: str, target: str) -> Result:
        return self.sm.exec(sandbox, "ping", "-c1", "-W2", target)

    def wait_web(self, port: int, address: str = "127.0.0.1", netns: int | None = None) -> str:
        return wait_for(
            lambda: try_http_get(address, port, netns), f"the web server behind {address}:{port}"
        )

    def plan(self) -> dict[str, Any]:
        report: dict[str, Any] = json.loads(self.sm.run("plan", str(self.sm.units), "--json").out)
        return report

    def assert_no_changes(self) -> None:
        result = self.sm.run("plan", str(self.sm.units), "--detailed-exitcode", expect=None)
        assert result.code == 0 and "No changes" in result.out, str(result)

    # -- teardown

    def leftovers(self) -> list[str]:
        """What of the instance and of the test is left on the host, seen without sandman."""
        left = list(self.sm.leftovers())
        left += [f"link {n}" for n in host_links(f"{self.tag}-", f"{self.tag}b-", self.prefix)]
        left += [
            f"{what} in {subnet}"
            for what, network in host_networks()
            for subnet in self.subnets
            if network.overlaps(subnet)
        ]
        for family in FAMILIES:
            if nat.table_name(self.tag) in table_names(family):
                left.append(f"table {family} {nat.table_name(self.tag)}")
        left += [f"rule {r.chain} {r.comment!r}" for r in net_dump.dump_rules(self.tag)]
        return left

    def scrub(self) -> None:
        self.sm.scrub()
        with IPRoute() as ipr:
            for name in host_links(f"{self.tag}-", f"{self.tag}b-", self.prefix):
                with contextlib.suppress(Exception):
                    ipr.link("del", ifname=name)
        for number in FAMILIES.values():
            nft = NFTables(nfgen_family=number)
            try:
                with contextlib.suppress(Exception):
                    nft.table("del", name=nat.table_name(self.tag))
            finally:
                nft.close()


def _free_number() -> int:
    """X such that no route or address of the host touches 10.200.X, 10.201.X or 10.202.X."""
    taken = [network for _, network in host_networks()]
    for _ in range(200):
        number = random.randrange(1, 255)
        mine = [IPv4Network(f"10.{n}.{number}.0/24") for n in (200, 201, 202)]
        if not any(m.overlaps(t) for m in mine for t in taken):
            return number
    pytest.fail("no free 10.200.X.0/24 on this host")


def _take_a_free_tag(sm: Sandman) -> None:
    """Move the instance to a state dir whose tag no cgroup, link or table of the host carries:
    tags are short hashes, and the test must never take another instance's objects for its own."""
    for attempt in range(100):
        tag = sm.tag
        busy = cgroup_dirs(f"sandman-{tag}") or host_links(f"{tag}-", f"{tag}b-")
        if not busy and all(nat.table_name(tag) not in table_names(f) for f in FAMILIES):
            return
        sm.state_dir = sm.root / f"state-net-{attempt}"
        sm.tag = instance_tag(str(sm.state_dir))
        sm.base = f"sandman-{sm.tag}"
    pytest.fail("no state dir under tmp_path has an instance tag free on this host")


def _stop_outside(outside: Outside) -> list[str]:
    problems = []
    if host_links(outside.link):  # not there when the test stopped before linking it
        with IPRoute() as ipr:
            try:
                ipr.link("del", ifname=outside.link)
            except Exception as e:
                problems.append(f"removing the test's link {outside.link}: {e}")
    outside.process.kill()
    outside.process.wait()
    if outside.process.stdout is not None:
        outside.process.stdout.close()
    return problems


@pytest.fixture
def lab(tmp_path: Path, busybox_image: Path) -> Iterator[Lab]:
    with sysctl_lock():
        saved = {path: Path(path).read_text() for path in SYSCTLS}
        sm = Sandman(tmp_path, busybox_image)
        _take_a_free_tag(sm)
        the_lab = Lab(sm, _free_number())
        try:
            yield the_lab
        finally:
            problems = _teardown(the_lab)
            for path, value in saved.items():
                if Path(path).read_text() != value:
                    Path(path).write_text(value)
    if problems:
        pytest.fail("\n".join(problems))


def _teardown(lab: Lab) -> list[str]:
    problems = []
    for halt in lab.stops:
        halt()
    for outside in lab.outsides:
        problems += _stop_outside(outside)
    lab.sm.note_records()
    for directory in lab.sm.unit_dirs:
        result = lab.sm.run("destroy", str(directory), expect=None)
        if result.code != 0:
            problems.append(f"destroy failed:\n{result}")
    left = lab.leftovers()
    if left:
        lab.scrub()
        problems.append(
            f"left on the host after `sandman destroy` (instance {lab.tag}, now scrubbed): "
            + "; ".join(left)
        )
        still = lab.leftovers()
        if still:
            problems.append("could not scrub: " + "; ".join(still))
    return problems


# ---------------------------------------------------------------------------------------------
# Reaching each other, the host, and the world


def test_sandboxes_on_one_network_ping_each_other_by_address_and_by_name(lab: Lab) -> None:
    sm = lab.sm
    sm.write("lan", network_unit(lab.subnet), kind="network")
    sm.write("a", sandbox_unit("lan"))
    sm.write("b", sandbox_unit("lan"))
    sm.apply()
    a, b = lab.address("a"), lab.address("b")
    assert {a, b} == {IPv4Interface(f"{lab.subnet[n]}/24") for n in (2, 3)}  # lowest free, by name

    assert f"from {b.ip}" in lab.ping("a", str(b.ip)).out
    assert f"from {a.ip}" in lab.ping("b", str(a.ip)).out
    assert f"PING b ({b.ip})" in lab.ping("a", "b").out
    assert f"PING a ({a.ip})" in lab.ping("b", "a").out
    inside = sm.exec("a", "ip", "-4", "addr", "show", "dev", "eth0").out
    assert f"inet {a}" in inside
    assert f"default via {lab.subnet[1]} dev eth0" in sm.exec("a", "ip", "route").out

    links = net_dump.dump_links(lab.tag)
    bridge = links[lab.bridge("lan")]
    assert bridge.kind == "bridge" and bridge.up
    assert {links[lab.veth(n)].master for n in ("a", "b")} == {bridge.ifindex}
    assert IPv4Interface(f"{lab.subnet[1]}/24") in net_dump.dump_addresses()[bridge.ifindex]


def test_a_server_on_the_gateway_is_reached_from_inside(lab: Lab) -> None:
    sm = lab.sm
    sm.write("lan", network_unit(lab.subnet), kind="network")
    sm.write("a", sandbox_unit("lan"))
    sm.apply()
    gateway = str(lab.subnet[1])
    port = lab.tcp_server(gateway)
    seen = sm.exec("a", "nc", "-w", "3", gateway, str(port)).out.strip()
    assert seen == str(lab.address("a").ip)  # the host sees the sandbox's own address


def test_port_forwards_reach_the_server_inside_from_the_host_and_from_outside(lab: Lab) -> None:
    sm = lab.sm
    every, loopback = free_port(), free_port()
    sm.write("lan", network_unit(lab.subnet), kind="network")
    ports: list[dict[str, Any]] = [
        {"host": every, "sandbox": 80},
        {"host": loopback, "sandbox": 80, "host_address": "127.0.0.1"},
    ]
    sm.write("web", sandbox_unit("lan", command=WEB, ports=ports))
    client = lab.outside("client")
    sm.apply()

    assert lab.wait_web(every) == f"{WEB_TEXT}\n"
    assert http_get("127.0.0.1", loopback) == f"{WEB_TEXT}\n"
    host = str(client.host_address.ip)
    assert http_get(host, every, netns=client.pid) == f"{WEB_TEXT}\n"
    with pytest.raises(ConnectionRefusedError):  # forwarded from 127.0.0.1 only
        http_get(host, loopback, netns=client.pid)


def test_nat_masquerades_what_leaves_the_subnet_and_is_changed_in_place(lab: Lab) -> None:
    sm = lab.sm
    # The uplink can route back to the sandbox's subnet: without NAT it sees the sandbox itself.
    uplink = lab.outside("up", routes=[lab.subnet])
    sm.write("lan", network_unit(lab.subnet, nat=True), kind="network")
    sm.write("a", sandbox_unit("lan"))
    sm.apply()
    pid = sm.running_init("a")
    assert uplink.ask(sm, "a") == str(uplink.host_address.ip)
    nat_rules = [r for r in net_dump.dump_rules(lab.tag) if r.kind == NAT]
    assert [(r.owner, r.spec) for r in nat_rules] == [("lan", str(lab.subnet))]

    sm.write("lan", network_unit(lab.subnet, nat=False), kind="network")
    [action] = lab.plan()["actions"]
    assert (action["object"], action["action"]) == ("network/lan", "update")
    assert action["changes"] == [{"key": "network.nat", "from": True, "to": False, "live": True}]
    sm.apply()
    assert sm.running_init("a") == pid
    assert uplink.ask(sm, "a") == str(lab.address("a").ip)
    assert [r for r in net_dump.dump_rules(lab.tag) if r.kind == NAT] == []

    sm.write("lan", network_unit(lab.subnet, nat=True), kind="network")
    sm.apply()
    assert sm.running_init("a") == pid
    assert uplink.ask(sm, "a") == str(uplink.host_address.ip)


def test_names_and_addresses_follow_members_as_they_come_and_go(lab: Lab) -> None:
    """A sandbox added to a running network is known by name to the others at once (their
    /etc/hosts is rewritten in place), takes a free address without moving theirs, and a removed
    one drops out of their /etc/hosts; the others are left running."""
    sm = lab.sm
    sm.write("lan", network_unit(lab.subnet), kind="network")
    sm.write("m", sandbox_unit("lan"))
    sm.apply()
    pid = sm.running_init("m")
    assert lab.address("m") == IPv4Interface(f"{lab.subnet[2]}/24")

    sm.write("b", sandbox_unit("lan"))  # sorts before m: an "auto" address must not move m
    sm.apply()
    assert sm.running_init("m") == pid
    assert lab.address("m") == IPv4Interface(f"{lab.subnet[2]}/24")
    b = lab.address("b")
    assert b == IPv4Interface(f"{lab.subnet[3]}/24")
    assert f"PING b ({b.ip})" in lab.ping("m", "b").out
    assert f"PING m ({lab.subnet[2]})" in lab.ping("b", "m").out

    sm.remove("b")
    sm.apply()
    assert sm.running_init("m") == pid
    hosts = sm.exec("m", "cat", "/etc/hosts").out
    assert "\tb\n" not in hosts and f"{lab.subnet[2]}\tm\n" in hosts, hosts


def test_plan_keeps_recorded_auto_addresses_as_apply_does(lab: Lab) -> None:
    """`plan` shows what `apply` will do: adding a sandbox whose name sorts first creates it, and
    the running one keeps the "auto" address it was given (no recreate planned, before or after)."""
    sm = lab.sm
    sm.write("lan", network_unit(lab.subnet), kind="network")
    sm.write("m", sandbox_unit("lan"))
    sm.apply()
    sm.write("b", sandbox_unit("lan"))
    kinds = [(a["object"], a["action"]) for a in lab.plan()["actions"]]
    assert kinds == [("sandbox/b", "create")]
    sm.apply()
    lab.assert_no_changes()


def test_a_restarted_init_is_put_back_on_its_network(lab: Lab) -> None:
    """An init that died takes its netns and the veth with it; the new one gets the same
    address, a new veth on the bridge, and its port forward still leads to it."""
    sm = lab.sm
    port = free_port()
    sm.write("lan", network_unit(lab.subnet), kind="network")
    sm.write("a", sandbox_unit("lan"))
    forward = [{"host": port, "sandbox": 80, "host_address": "127.0.0.1"}]
    sm.write("web", sandbox_unit("lan", command=WEB, ports=forward, sandbox='restart = "always"'))
    sm.apply()
    address = lab.address("web")
    assert lab.wait_web(port) == f"{WEB_TEXT}\n"
    old_pid, old_start = sm.init("web")
    os.kill(old_pid, signal.SIGKILL)
    wait_for(lambda: not alive(old_pid, old_start), "the killed init to die")

    assert "recreated" in sm.apply().out  # a new init on the network
    assert sm.running_init("web") != old_pid
    assert lab.address("web") == address
    links = net_dump.dump_links(lab.tag)
    assert links[lab.veth("web")].master == links[lab.bridge("lan")].ifindex
    assert lab.wait_web(port) == f"{WEB_TEXT}\n"
    assert f"PING web ({address.ip})" in lab.ping("a", "web").out
    lab.assert_no_changes()


# ---------------------------------------------------------------------------------------------
# Drift: what is damaged by hand, plan shows and apply repairs, the inits running on


def _delete_rules(tag: str, kind: str, owner: str, keep: int = 0) -> None:
    """Delete `owner`'s rules of `kind`, all but the first `keep` (a partly deleted set)."""
    table = nat.table_name(tag)
    doomed = [r for r in net_dump.dump_rules(tag) if (r.kind, r.owner) == (kind, owner)][keep:]
    assert doomed, f"no {kind} rule of {owner} to delete"
    requests = [
        nft_rules.delete_rule(table, r.chain, r.handle, r.comment, r.family) for r in doomed
    ]
    netlink.batch(requests, table)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


DAMAGE: dict[str, tuple[Callable[[Lab], None], set[tuple[str, str]]]] = {
    "veth-deleted": (
        lambda lab: _ip("link", "del", lab.veth("a")),
        {("sandbox/a", "network.veth")},
    ),
    "veth-detached": (
        lambda lab: _ip("link", "set", lab.veth("a"), "nomaster"),
        {("sandbox/a", "network.veth")},
    ),
    "gateway-deleted": (
        lambda lab: _ip("addr", "del", f"{lab.subnet[1]}/24", "dev", lab.bridge("lan")),
        {("network/lan", "network.gateway")},
    ),
    "bridge-deleted": (
        lambda lab: _ip("link", "del", lab.bridge("lan")),
        {
            ("network/lan", "network.bridge"),
            ("sandbox/a", "network.veth"),
            ("sandbox/web", "network.veth"),
        },
    ),
    "bridge-down": (
        lambda lab: _ip("link", "set", lab.bridge("lan"), "down"),
        {("network/lan", "network.bridge")},
    ),
    "nat-rule-deleted": (
        lambda lab: _delete_rules(lab.tag, NAT, "lan"),
        {("network/lan", "network.nat")},
    ),
    "port-rules-deleted": (
        lambda lab: _delete_rules(lab.tag, PORT, "web"),
        {("sandbox/web", "network.ports")},
    ),
    "forward-rules-deleted": (
        lambda lab: _delete_rules(lab.tag, FORWARD, "lan", keep=1),
        {("network/lan", "network.forward")},
    ),
    "filter-rules-deleted": (
        lambda lab: _delete_rules(lab.tag, ANTISPOOF, "a", keep=2),
        {("sandbox/a", "network.filter")},
    ),
    "table-deleted": (
        lambda lab: nat.remove_table(lab.tag),
        {
            ("network/lan", "network.nat"),
            ("network/lan", "network.forward"),
            ("sandbox/web", "network.ports"),
            ("sandbox/a", "network.filter"),
            ("sandbox/web", "network.filter"),
        },
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_drift_is_planned_as_a_repair_and_repaired_in_place(lab: Lab, damage: str) -> None:
    sm = lab.sm
    port = free_port()
    uplink = lab.outside("up")
    sm.write("lan", network_unit(lab.subnet, nat=True), kind="network")
    sm.write("a", sandbox_unit("lan"))
    forward = [{"host": port, "sandbox": 80, "host_address": "127.0.0.1"}]
    sm.write("web", sandbox_unit("lan", command=WEB, ports=forward))
    sm.apply()
    pids = {name: sm.running_init(name) for name in ("a", "web")}

    def works() -> None:
        assert f"PING web ({lab.address('web').ip})" in lab.ping("a", "web").out
        assert lab.wait_web(port) == f"{WEB_TEXT}\n"
        assert uplink.ask(sm, "a") == str(uplink.host_address.ip)

    works()
    damage_it, expected = DAMAGE[damage]
    damage_it(lab)

    actions = lab.plan()["actions"]
    assert {a["action"] for a in actions} == {"repair"}, actions
    found = {(a["object"], d.split(":")[0]) for a in actions for d in a["drift"]}
    assert expected <= found, actions
    drift = {s["name"]: s["drift"] for s in sm.status()["sandboxes"]}
    for name in ("a", "web"):
        assert bool(drift[name]) == any(obj == f"sandbox/{name}" for obj, _ in expected)

    result = sm.apply()
    assert f"{len(actions)} repaired" in result.out
    lab.assert_no_changes()
    assert {name: sm.running_init(name) for name in pids} == pids
    works()


# ---------------------------------------------------------------------------------------------
# Reconciling changed units


def test_a_port_change_is_an_in_place_update(lab: Lab) -> None:
    sm = lab.sm
    old, new = free_port(), free_port()
    sm.write("lan", network_unit(lab.subnet), kind="network")
    sm.write("web", sandbox_unit("lan", command=WEB, ports=[{"host": old, "sandbox": 80}]))
    sm.apply()
    pid = sm.running_init("web")
    assert lab.wait_web(old) == f"{WEB_TEXT}\n"

    sm.write("web", sandbox_unit("lan", command=WEB, ports=[{"host": new, "sandbox": 80}]))
    [action] = lab.plan()["actions"]
    assert (action["object"], action["action"]) == ("sandbox/web", "update")
    assert [(c["key"], c["live"]) for c in action["changes"]] == [("network.ports", True)]
    sm.apply()
    assert sm.running_init("web") == pid
    assert http_get("127.0.0.1", new) == f"{WEB_TEXT}\n"
    with pytest.raises(ConnectionRefusedError):
        http_get("127.0.0.1", old)
    ports = sm.status_of("web")["network"]["ports"]
    assert [(p["host"], p["sandbox"]) for p in ports] == [(new, 80)]
    specs = {r.spec for r in net_dump.dump_rules(lab.tag) if (r.kind, r.owner) == (PORT, "web")}
    assert specs and all(f":{new} " in spec for spec in specs), specs


def test_an_address_change_recreates_the_sandbox(lab: Lab) -> None:
    sm = lab.sm
    first, second = (IPv4Interface(f"{lab.subnet[n]}/24") for n in (10, 20))
    sm.write("lan", network_unit(lab.subnet), kind="network")
    sm.write("a", sandbox_unit("lan", address=str(first)))
    sm.write("b", sandbox_unit("lan"))
    sm.apply()
    old_pid = sm.running_init("a")
    assert f"PING a ({first.ip})" in lab.ping("b", "a").out

    sm.write("a", sandbox_unit("lan", address=str(second)))
    [action] = lab.plan()["actions"]
    assert (action["object"], action["action"]) == ("sandbox/a", "recreate")
    assert "network.address" in action["requires_recreate"]
    b_pid = sm.running_init("b")
    sm.apply()
    assert sm.running_init("a") != old_pid and not alive(old_pid)
    assert sm.running_init("b") == b_pid
    assert lab.address("a") == second
    assert f"inet {second}" in sm.exec("a", "ip", "-4", "addr", "show", "dev", "eth0").out
    assert f"PING a ({second.ip})" in lab.ping("b", "a").out  # b's /etc/hosts follows
    assert f"from {second.ip}" in lab.ping("b", str(second.ip)).out


def test_a_subnet_change_makes_the_network_anew_with_its_sandboxes(lab: Lab) -> None:
    sm = lab.sm
    sm.write("lan", network_unit(lab.subnet), kind="network")
    sm.write("a", sandbox_unit("lan"))
    sm.write("b", sandbox_unit("lan"))
    sm.apply()
    pids = {name: sm.running_init(name) for name in ("a", "b")}

    sm.write("lan", network_unit(lab.subnet2), kind="network")
    kinds = {a["object"]: a["action"] for a in lab.plan()["actions"]}
    assert kinds == {"network/lan": "recreate", "sandbox/a": "recreate", "sandbox/b": "recreate"}
    sm.apply()
    for name in ("a", "b"):
        assert sm.running_init(name) != pids[name]
        assert lab.address(name).network == lab.subnet2
    b = lab.address("b")
    assert f"PING b ({b.ip})" in lab.ping("a", "b").out
    bridge = net_dump.dump_links(lab.tag)[lab.bridge("lan")]
    addresses = {a for a in net_dump.dump_addresses()[bridge.ifindex] if a.version == 4}
    assert addresses == {IPv4Interface(f"{lab.subnet2[1]}/24")}  # the old gateway is gone
    lab.assert_no_changes()


def test_a_removed_network_is_destroyed_with_its_sandboxes(lab: Lab) -> None:
    sm = lab.sm
    port = free_port()
    sm.write("lan", network_unit(lab.subnet, nat=True), kind="network")
    sm.write("a", sandbox_unit("lan", ports=[{"host": port, "sandbox": 80}]))
    sm.write("other", network_unit(lab.subnet2, nat=True), kind="network")
    sm.write("b", sandbox_unit("other"))
    sm.apply()
    a_pid, b_pid = sm.running_init("a"), sm.running_init("b")

    sm.remove("lan", kind="network")
    sm.remove("a")
    kinds = [(a["object"], a["action"]) for a in lab.plan()["actions"]]
    assert kinds == [("sandbox/a", "destroy"), ("network/lan", "destroy")]
    sm.apply()
    assert not alive(a_pid) and sm.gone("a") == []
    assert not sm.record_path("lan", "networks").exists()
    assert host_links(lab.bridge("lan"), lab.veth("a")) == []
    assert not [what for what, network in host_networks() if network.overlaps(lab.subnet)]
    owners = {(r.kind, r.owner) for r in net_dump.dump_rules(lab.tag)}
    assert (NAT, "lan") not in owners and (PORT, "a") not in owners
    assert (NAT, "other") in owners
    assert sm.running_init("b") == b_pid
    assert f"from {lab.subnet2[1]}" in lab.ping("b", str(lab.subnet2[1])).out
    lab.assert_no_changes()


@pytest.mark.parametrize("verb", ["validate", "plan", "apply"])
def test_removing_a_network_a_sandbox_still_uses_is_a_unit_error(lab: Lab, verb: str) -> None:
    sm = lab.sm
    sm.write("lan", network_unit(lab.subnet), kind="network")
    sm.write("a", sandbox_unit("lan"))
    sm.apply()
    pid = sm.running_init("a")

    sm.remove("lan", kind="network")
    try:
        result = sm.run(verb, str(sm.units), expect=2)
        problem = re.search(r"^(\S+):\d+: network\.attach: names network 'lan'", result.err, re.M)
        assert problem and problem[1] == str(sm.units / "a.sandbox.toml"), str(result)
        assert "nothing was changed" in result.err
        report = json.loads(sm.run(verb, str(sm.units), "--json", expect=2).out)["error"]
        assert report["kind"] == "invalid_units"
        assert [(p["file"], p["key"]) for p in report["problems"]] == [
            (str(sm.units / "a.sandbox.toml"), "network.attach")
        ]
        assert sm.running_init("a") == pid
        assert host_links(lab.bridge("lan"), lab.veth("a")) == sorted(
            [lab.bridge("lan"), lab.veth("a")]
        )
        assert sm.record_path("lan", "networks").exists()
    finally:  # the directory valid again, so that teardown can destroy it
        sm.write("lan", network_unit(lab.subnet), kind="network")
    lab.assert_no_changes()


# ---------------------------------------------------------------------------------------------
# What status reports


def test_status_json_shows_addresses_ports_and_networks(lab: Lab) -> None:
    sm = lab.sm
    port = free_port()
    address = IPv4Interface(f"{lab.subnet[7]}/24")
    forward = {"host": port, "sandbox": 80, "protocol": "tcp", "host_address": "127.0.0.1"}
    sm.write("lan", network_unit(lab.subnet, nat=True), kind="network")
    sm.write("a", sandbox_unit("lan"))
    sm.write("web", sandbox_unit("lan", command=WEB, address=str(address), ports=[forward]))
    sm.write("alone", unit())
    sm.apply()

    report = sm.status()
    entries = {s["name"]: s["network"] for s in report["sandboxes"]}
    assert entries["a"]["address"] == f"{lab.subnet[2]}/24" and entries["a"]["ports"] == []
    assert entries["web"]["address"] == str(address)
    assert entries["web"]["ports"] == [forward]
    assert entries["alone"]["address"] is None and entries["alone"]["ports"] == []
    for name in ("a", "web"):
        inside = sm.exec(name, "ip", "-4", "addr", "show", "dev", "eth0").out
        assert f"inet {entries[name]['address']}" in inside
    [lan] = report["networks"]
    assert lan["name"] == "lan" and lan["bridge"] == lab.bridge("lan")
    assert lan["gateway"] == f"{lab.subnet[1]}/24"
    assert all(s["drift"] == [] for s in report["sandboxes"])
    text = sm.run("status").out
    assert str(address) in text and f"{lab.subnet[2]}/24" in text


# ---------------------------------------------------------------------------------------------
# The harness itself


def test_the_leak_check_sees_and_scrubs_links_addresses_and_rules(lab: Lab) -> None:
    """With the records deleted by hand, the network is no object of sandman's (orphans, which
    the next apply or destroy would remove: see test_crash.py): the leak check must report its
    bridge, veth, addresses, routes, table and rules, and the scrub must remove them."""
    sm = lab.sm
    sm.write("lan", network_unit(lab.subnet, nat=True), kind="network")
    sm.write("a", sandbox_unit("lan", ports=[{"host": free_port(), "sandbox": 80}]))
    sm.apply()
    sm.record_path("a").unlink()
    sm.record_path("lan", "networks").unlink()
    left = lab.leftovers()
    assert {f"link {lab.bridge('lan')}", f"link {lab.veth('a')}"} <= set(left)
    assert f"address {lab.subnet[1]}/24 in {lab.subnet}" in left
    assert f"route {lab.subnet} in {lab.subnet}" in left
    assert f"table inet {nat.table_name(lab.tag)}" in left
    assert f"table bridge {nat.table_name(lab.tag)}" in left
    assert any(item.startswith("rule ") and f"{NAT} lan" in item for item in left)
    assert any(item.startswith("rule ") and f"{PORT} a" in item for item in left)
    assert any(item.startswith("rule ") and f"{ANTISPOOF} a" in item for item in left)
    assert any(item.startswith("rule ") and f"{FORWARD} lan" in item for item in left)
    lab.scrub()
    assert lab.leftovers() == []
