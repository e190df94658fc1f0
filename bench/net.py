"""What a sandbox's network costs the applier, call by call: sandman.kernel.net and nat in this
process, `time.perf_counter()` around each call (root; no row of the summary table; --warmups
and --python are not used):

- a netlink socket in a sandbox's netns: setns there and back (what net.py does) against
  pyroute2's `IPRoute(netns=...)` and `NetNS(...)`, which fork a child to make the socket;
- `create_veth` (pair born in the sandbox's netns, host end on the bridge, eth0 configured with
  IPv4 and IPv6 addresses and default routes), each into a fresh netns, and `remove_link`;
- `ensure_ports` (4 forwards) for one sandbox after another, the same again (a no-op),
  `dump_rules`, then `remove_ports` for each;
- `dump_links` and `dump_addresses` with 10, 100 and 500 extra veth pairs on the host.

Everything is made under the instance tag `smk<3 hex>` and removed at the end; the forwarding
sysctls that ensure_bridge turns on are put back.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Interface, IPv6Interface

from harness import Session, Stats, links, main, table, wait_links_gone
from pyroute2 import IPRoute, NetNS

from sandman.kernel import nat, net, net_dump, netlink
from sandman.kernel.netns import thread_in_netns
from sandman.kernel.veth import create_veth
from sandman.units.model import PortForward
from sandman.units.names import bridge_name, veth_name

SYSCTLS = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")
GATEWAY, GATEWAY6 = IPv4Interface("10.254.0.1/16"), IPv6Interface("fd5a:bec::1/64")
EXTRA_LINKS = (10, 100, 500)  # veth pairs on the host for the dumps


@contextlib.contextmanager
def netns_holders(count: int) -> Iterator[list[int]]:
    """The PIDs of `count` processes, each alone in a new network namespace."""
    procs = [subprocess.Popen(["unshare", "-n", "sleep", "600"]) for _ in range(count)]
    try:
        time.sleep(0.3)  # unshare runs before sleep: give every child time to get there
        yield [proc.pid for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


class Calls:
    """The table of timed calls: each `count` times, with the call's index."""

    def __init__(self, runs: int) -> None:
        self.runs, self.rows = runs, [["call", "ms, median (min-max)", "calls"]]

    def time(self, what: str, call: Callable[[int], object], count: int = 0) -> None:
        times = []
        for index in range(count or self.runs):
            start = time.perf_counter()
            call(index)
            times.append((time.perf_counter() - start) * 1000.0)
        self.rows.append([what, str(Stats(tuple(times))), str(len(times))])


def _socket_in(fd: int) -> socket.socket:
    """sandman's way (kernel/veth.py): this thread into the netns for the socket, and back."""
    with thread_in_netns(fd):
        return netlink.route_socket()


def sockets(calls: Calls) -> None:
    with netns_holders(1) as (pid,):
        path = f"/proc/{pid}/ns/net"
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        calls.time("netns socket: setns there and back", lambda _: _socket_in(fd).close())
        calls.time(
            "netns socket: IPRoute(netns=...) (forks)",
            lambda _: IPRoute(netns=path, flags=0).close(),
        )
        calls.time("netns socket: NetNS(...) (forks)", lambda _: NetNS(path, flags=0).close())
        os.close(fd)


def veths_and_ports(calls: Calls, tag: str) -> None:
    bridge = bridge_name(tag, "bench")
    net.ensure_bridge(bridge, GATEWAY, GATEWAY6)
    with netns_holders(calls.runs) as pids:

        def create(i: int) -> None:
            address, address6 = GATEWAY.network[i + 2], GATEWAY6.network[i + 2]
            veth, v4 = veth_name(tag, f"s{i}"), IPv4Interface(f"{address}/16")
            v6 = IPv6Interface(f"{address6}/64")
            create_veth(veth, pids[i], bridge, v4, GATEWAY.ip, address6=v6, gateway6=GATEWAY6.ip)

        calls.time("create_veth (create + configure v4 and v6)", create)
        calls.time("remove_link of a veth", lambda i: net.remove_link(veth_name(tag, f"s{i}")))

    def ensure(i: int) -> None:
        forwards = [
            PortForward(host=40000 + 10 * i + j, sandbox=80, host_address="127.0.0.1")
            for j in range(4)
        ]
        nat.ensure_ports(tag, f"s{i}", GATEWAY.network[2], forwards, bridge=bridge)

    calls.time("ensure_ports, 4 forwards (8 rules) per sandbox", ensure)
    calls.time("ensure_ports again (no-op: one dump)", ensure)
    calls.time(f"dump_rules ({8 * calls.runs + 2} rules)", lambda _: nat.dump_rules(tag))
    calls.time("remove_ports (8 rules)", lambda i: nat.remove_ports(tag, f"s{i}"))
    nat.remove_table(tag)
    net.remove_bridge(bridge)


def dumps(calls: Calls, tag: str) -> None:
    runs = max(5, calls.runs // 2)
    with IPRoute() as ipr:
        for made, count in zip((0, *EXTRA_LINKS), EXTRA_LINKS, strict=False):
            for n in range(made, count):
                ipr.link(
                    "add", ifname=veth_name(tag, f"d{n}"), kind="veth", peer=veth_name(tag, f"p{n}")
                )
            total = len(links())
            calls.time(
                f"dump_links, {total} links on the host", lambda _: net_dump.dump_links(tag), runs
            )
            calls.time(
                f"dump_addresses, {total} links on the host",
                lambda _: net_dump.dump_addresses(),
                runs,
            )


def measure(session: Session) -> None:
    calls, tag = Calls(session.args.runs), f"smk{secrets.token_hex(2)[:3]}"
    for path in SYSCTLS:
        session.cleanup.restore_at_end(path)

    def remove_all() -> None:
        nat.remove_table(tag)
        for name in links():
            if name.startswith(tag):
                net.remove_link(name)  # a veth's peer goes with it; a gone one is success
        wait_links_gone(tag)

    session.cleanup.add(f"links and table {tag}*", remove_all)
    sockets(calls)
    veths_and_ports(calls, tag)
    dumps(calls, tag)
    print(f"sandman.kernel.net and nat, in process; instance tag {tag}")
    print(table(calls.rows[0], calls.rows[1:]))


if __name__ == "__main__":
    raise SystemExit(main("Time sandman's network calls in process.", measure, runs=20))
