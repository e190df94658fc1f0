"""Benchmark of sandman.kernel.net and nat: what a sandbox's network costs the applier (root).

    sudo .venv/bin/python bench/net.py [--runs 20] [--links 10,100,500]

In-process timings (`time.perf_counter()` around one library call), median, min and max in ms:

- a netlink socket in a sandbox's netns: setns there and back (what net.py does) against
  pyroute2's `IPRoute(netns=...)` and `NetNS(...)`, which fork a child to make the socket;
- `create_veth` (pair born in the sandbox's netns, host end on the bridge, eth0 configured with
  IPv4 and IPv6 addresses and default routes), each into a fresh netns, and `remove_link`;
- `dump_links` and `dump_addresses` with N extra veth pairs on the host (2N links);
- `ensure_ports` for one sandbox after another, the same again (a no-op), `dump_rules`, then
  `remove_ports` for each.

Everything is made under the instance tag `smk<3 hex>` and removed at the end; the forwarding
sysctls that ensure_bridge turns on are put back. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Interface, IPv6Interface
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute, NetNS

from sandman.kernel import nat, net, net_dump
from sandman.units.model import PortForward
from sandman.units.names import bridge_name, veth_name

SYSCTLS = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")
GATEWAY, GATEWAY6 = IPv4Interface("10.254.0.1/16"), IPv6Interface("fd5a:bec::1/64")


def report(what: str, times: list[float]) -> None:
    ms = [t * 1000 for t in times]
    print(f"{what:<48} {statistics.median(ms):8.2f} {min(ms):8.2f} {max(ms):8.2f}  (n={len(ms)})")


def timed(call: Callable[..., object], *args: Any, **kwargs: Any) -> float:
    start = time.perf_counter()
    call(*args, **kwargs)
    return time.perf_counter() - start


@contextlib.contextmanager
def children(count: int) -> Iterator[list[subprocess.Popen[bytes]]]:
    """`count` processes, each alone in a new network namespace."""
    procs = [subprocess.Popen(["unshare", "-n", "sleep", "600"]) for _ in range(count)]
    try:
        time.sleep(0.3)  # unshare runs before sleep: give every child time to get there
        yield procs
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def bench_sockets(runs: int) -> None:
    with children(1) as (child,):
        path = f"/proc/{child.pid}/ns/net"
        fd = os.open(path, os.O_RDONLY)
        try:
            report(
                "netns socket: setns there and back",
                [timed(lambda: net._route_in(fd).close()) for _ in range(runs)],
            )
            fork = [timed(lambda: IPRoute(netns=path, flags=0).close()) for _ in range(runs)]
            report("netns socket: IPRoute(netns=...) (forks)", fork)
            netns = [timed(lambda: NetNS(path, flags=0).close()) for _ in range(runs)]
            report("netns socket: NetNS(...) (forks)", netns)
        finally:
            os.close(fd)


def bench_veths(tag: str, runs: int) -> None:
    bridge = bridge_name(tag, "bench")
    net.ensure_bridge(bridge, GATEWAY, GATEWAY6)
    try:
        with children(runs) as procs:
            creates, removes = [], []
            for i, proc in enumerate(procs):
                veth = veth_name(tag, f"s{i}")
                address = IPv4Interface(f"{GATEWAY.network[i + 2]}/16")
                address6 = IPv6Interface(f"{GATEWAY6.network[i + 2]}/64")
                v6 = {"address6": address6, "gateway6": GATEWAY6.ip}
                args = (veth, proc.pid, bridge, address, GATEWAY.ip)
                creates.append(timed(net.create_veth, *args, **v6))
            for i in range(runs):
                removes.append(timed(net.remove_link, veth_name(tag, f"s{i}")))
            report("create_veth (create + configure v4 and v6)", creates)
            report("remove_link of a veth", removes)
        bench_nat(tag, runs, bridge)
    finally:
        net.remove_bridge(bridge)


def bench_nat(tag: str, runs: int, bridge: str) -> None:
    """`runs` sandboxes with 4 forwards each, added one after another, then removed."""
    address = GATEWAY.network[2]
    ports = [
        [
            PortForward(host=40000 + 10 * i + j, sandbox=80, host_address="127.0.0.1")
            for j in range(4)
        ]
        for i in range(runs)
    ]
    add, again, remove = [], [], []
    try:
        for i in range(runs):
            add.append(timed(nat.ensure_ports, tag, f"s{i}", address, ports[i], bridge=bridge))
        for i in range(runs):
            again.append(timed(nat.ensure_ports, tag, f"s{i}", address, ports[i], bridge=bridge))
        dump = [timed(nat.dump_rules, tag) for _ in range(runs)]
        for i in range(runs):
            remove.append(timed(nat.remove_ports, tag, f"s{i}"))
    finally:
        nat.remove_table(tag)
    report("ensure_ports, 4 forwards (8 rules) per sandbox", add)
    report("ensure_ports again (no-op: one dump)", again)
    report(f"dump_rules ({8 * runs + 2} rules)", dump)
    report("remove_ports (8 rules)", remove)


def bench_dumps(tag: str, runs: int, counts: list[int]) -> None:
    made: list[str] = []
    try:
        with IPRoute() as ipr:
            for count in counts:
                while len(made) < count:
                    name = veth_name(tag, f"d{len(made)}")
                    ipr.link("add", ifname=name, kind="veth", peer=veth_name(tag, f"p{len(made)}"))
                    made.append(name)
                total = len(os.listdir("/sys/class/net"))
                links = [timed(lambda: net_dump.dump_links(tag)) for _ in range(runs)]
                report(f"dump_links, {total} links on the host", links)
                addrs = [timed(net_dump.dump_addresses) for _ in range(runs)]
                report(f"dump_addresses, {total} links on the host", addrs)
    finally:
        for name in made:
            net.remove_link(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--links", default="10,100,500", help="extra veth pairs for the dumps")
    parser.add_argument("--python", help="accepted for bench/run; the benchmark runs in-process")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/net.py: needs root (links, namespaces, nf_tables); skipped")
        return
    tag = f"smk{secrets.token_hex(2)[:3]}"
    saved = {path: Path(path).read_text() for path in SYSCTLS}
    print(f"{'':<48} {'median':>8} {'min':>8} {'max':>8}   ms, tag {tag}")
    try:
        bench_sockets(args.runs)
        bench_veths(tag, args.runs)
        bench_dumps(tag, max(5, args.runs // 2), [int(n) for n in args.links.split(",")])
    finally:
        for path, value in saved.items():
            if Path(path).read_text() != value:
                Path(path).write_text(value)
        left = [n for n in os.listdir("/sys/class/net") if n.startswith(tag)]
        if left:
            print(f"left behind: {', '.join(left)}", file=sys.stderr)
            sys.exit(1)


if __name__ == "__main__":
    main()
