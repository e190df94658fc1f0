"""What the source filter and the forward policy cost (issue #18), as root; prints a table.

    sudo .venv/bin/python bench/netsec.py [--rounds 5] [--bytes 1G] [--trips 5000] [--sandboxes 100]

Two "sandboxes" (processes alone in a new netns, attached by sandman's own create_veth to one
bridge) exchange data over TCP from sockets this process opens in their netns: a bulk transfer
(throughput) and one-byte request/response round trips (latency, where a per-frame cost shows).
Four set-ups, interleaved round by round: both sandboxes' source filters and the network's
forward policy (what apply makes), the forward policy alone (the bridge table deleted), the NAT
chains alone (what apply made before: their conntrack is on the path too), and no sandman table.
On a host with br_netfilter (bridge-nf-call-iptables=1) the bridged IPv4 packets also pass the
inet forward hook, so the forward policy is on their path too.

Then the set-up cost: `source_filter.ensure` for sandbox after sandbox (the rules name a veth and
need none to exist), `remove`, and observe's one rule dump with and without the filters of
`--sandboxes` sandboxes. Medians (min-max). Everything is made under the tag `smq<3 hex>` and
removed at the end, the forwarding sysctls put back. Nothing asserts a time.
"""

from __future__ import annotations

import argparse
import secrets
import socket
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from ipaddress import IPv4Address, IPv4Interface
from pathlib import Path

from sandman.kernel import nat, net, net_dump, netlink, nft_rules, source_filter, veth
from sandman.kernel.net_facts import NFPROTO_INET
from sandman.kernel.netns import thread_in_netns_of
from sandman.units.names import bridge_name, veth_name

SYSCTLS = ("/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding")
GATEWAY = IPv4Interface("10.253.77.1/24")
PORT = 5201
CHUNK = 256 * 1024


def socket_in(pid: int) -> socket.socket:
    with thread_in_netns_of(pid):
        return socket.socket()


def serve(pid: int, address: str, handle: Callable[[socket.socket], None]) -> threading.Thread:
    server = socket_in(pid)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, PORT))
    server.listen(1)

    def run() -> None:
        with server:
            conn, _ = server.accept()
            with conn:
                handle(conn)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def bulk(sender: int, receiver: int, address: str, wanted: int) -> float:
    """Gbit/s of `wanted` bytes (in whole chunks) from `sender` to `receiver`'s server."""
    chunks = max(1, -(-wanted // CHUNK))
    total = chunks * CHUNK

    def sink(conn: socket.socket) -> None:
        buffer, left = bytearray(CHUNK), total
        while left > 0:
            got = conn.recv_into(buffer)
            if not got:
                break
            left -= got

    thread = serve(receiver, address, sink)
    data = memoryview(bytes(CHUNK))
    with socket_in(sender) as sock:
        start = time.perf_counter()
        sock.connect((address, PORT))
        for _ in range(chunks):
            sock.sendall(data)
        thread.join()
        elapsed = time.perf_counter() - start
    return total * 8 / elapsed / 1e9


def round_trips(sender: int, receiver: int, address: str, trips: int) -> float:
    """Microseconds per one-byte request and its one-byte answer."""

    def echo(conn: socket.socket) -> None:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while conn.recv(1):
            conn.sendall(b"r")

    thread = serve(receiver, address, echo)
    with socket_in(sender) as sock:
        sock.connect((address, PORT))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        start = time.perf_counter()
        for _ in range(trips):
            sock.sendall(b"q")
            sock.recv(1)
        elapsed = time.perf_counter() - start
    thread.join()
    return elapsed / trips * 1e6


class Lab:
    def __init__(self) -> None:
        self.tag = f"smq{secrets.token_hex(2)[:3]}"
        self.bridge = bridge_name(self.tag, "lan")
        self.children: list[subprocess.Popen[bytes]] = []
        self.sandboxes: dict[str, tuple[int, IPv4Interface]] = {}

    def sandbox(self, name: str, number: int) -> None:
        child = subprocess.Popen(["unshare", "-n", "sleep", "3600"])
        self.children.append(child)
        time.sleep(0.2)  # unshare has made the netns before sleep runs
        address = IPv4Interface(f"{GATEWAY.network[number]}/24")
        veth.create_veth(veth_name(self.tag, name), child.pid, self.bridge, address, GATEWAY.ip)
        self.sandboxes[name] = (child.pid, address)

    def filtered(self) -> None:
        nat.ensure_forward(self.tag, "lan", self.bridge)
        for name, (_, address) in self.sandboxes.items():
            source = source_filter.source_of(veth_name(self.tag, name), address.ip, None)
            source_filter.ensure(self.tag, name, source)

    def forward_only(self) -> None:
        self.filtered()
        nat.remove_table(self.tag)
        nat.ensure_forward(self.tag, "lan", self.bridge)

    def nat_only(self) -> None:
        """What sandman made before #18: the inet table's NAT chains, no forward chain."""
        nat.remove_table(self.tag)
        nat.ensure_nat(self.tag, "lan", GATEWAY.network, True)
        table = net_dump.table_name(self.tag)
        netlink.batch([nft_rules.delete_chain(table, "forward", NFPROTO_INET)], table)

    def bare(self) -> None:
        nat.remove_table(self.tag)

    def close(self) -> None:
        nat.remove_table(self.tag)
        for name in self.sandboxes:
            net.remove_link(veth_name(self.tag, name))
        net.remove_link(self.bridge)
        for child in self.children:
            child.kill()
            child.wait()


def stats(values: list[float], unit: str) -> str:
    return f"{statistics.median(values):8.2f} {unit} ({min(values):.2f}-{max(values):.2f})"


def traffic(lab: Lab, rounds: int, total: int, trips: int) -> None:
    setups = {"filters + forward policy": lab.filtered, "forward policy only": lab.forward_only}
    setups |= {"NAT chains only (before)": lab.nat_only, "no sandman table": lab.bare}
    found: dict[str, dict[str, list[float]]] = {k: {"bulk": [], "rr": []} for k in setups}
    (a, _), (b, b_address) = lab.sandboxes["a"], lab.sandboxes["b"]
    for _ in range(rounds):
        for label, make in setups.items():
            make()
            found[label]["bulk"].append(bulk(a, b, str(b_address.ip), total))
            found[label]["rr"].append(round_trips(a, b, str(b_address.ip), trips))
    print(f"TCP between two sandboxes on one bridge, {rounds} interleaved rounds:")
    for label, numbers in found.items():
        print(f"  {label:<28} bulk {stats(numbers['bulk'], 'Gbit/s')}"
              f"   round trip {stats(numbers['rr'], 'us')}")  # fmt: skip


def setup_cost(tag: str, count: int) -> None:
    def ensure(number: int) -> None:
        address = IPv4Address(int(GATEWAY.network[2]) + number)
        source = source_filter.source_of(veth_name(tag, f"s{number}"), address, None)
        source_filter.ensure(tag, f"s{number}", source)

    def remove(number: int) -> None:
        source_filter.remove(tag, f"s{number}")

    bare_dump = repeated(lambda: net_dump.dump_rules(tag), 20)
    first = [once(ensure, n) for n in range(count)]
    again = [once(ensure, n) for n in range(count)]
    full_dump = repeated(lambda: net_dump.dump_rules(tag), 20)
    removed = [once(remove, n) for n in range(count)]
    nat.remove_table(tag)
    tenth = max(1, count // 10)
    print(f"Source filter set-up, {count} sandboxes one after another:")
    print(f"  ensure, first {tenth}:  {stats(first[:tenth], 'ms')}")
    print(f"  ensure, last {tenth}:   {stats(first[-tenth:], 'ms')}")
    print(f"  ensure again (no-op):   {stats(again, 'ms')}")
    print(f"  remove:                 {stats(removed, 'ms')}")
    print(f"observe's rule dump: no filters {stats(bare_dump, 'ms')}, "
          f"{count} filters {stats(full_dump, 'ms')}")  # fmt: skip


def once(call: Callable[[int], None], number: int) -> float:
    start = time.perf_counter()
    call(number)
    return (time.perf_counter() - start) * 1000


def repeated(call: Callable[[], object], runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000)
    return times


def size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
    return int(text[:-1]) * units[text[-1]] if text[-1] in units else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--bytes", type=size, default=size("1G"))
    parser.add_argument("--trips", type=int, default=5000)
    parser.add_argument("--sandboxes", type=int, default=100)
    args = parser.parse_args()
    saved = {path: Path(path).read_text() for path in SYSCTLS}
    lab = Lab()
    try:
        net.ensure_bridge(lab.bridge, GATEWAY)
        lab.sandbox("a", 2)
        lab.sandbox("b", 3)
        traffic(lab, args.rounds, args.bytes, args.trips)
        setup_cost(f"{lab.tag}x", args.sandboxes)
    finally:
        lab.close()
        nat.remove_table(f"{lab.tag}x")
        for path, value in saved.items():
            Path(path).write_text(value)


if __name__ == "__main__":
    main()
