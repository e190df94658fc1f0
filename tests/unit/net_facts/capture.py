"""Capture the fixtures of test_net_pure.py from a real host (run as root, by hand; not a test).

    .venv/bin/python tests/unit/net_facts/capture.py

It makes a bridge and a veth pair whose peer lives in a throwaway network namespace, a NAT rule
and two port forwards, then writes `host.json`: the payloads of the kernel's link, address and
rule dump replies, as hex, exactly as net_dump.py reads them (only other links' messages are left
out) and, as the expected facts, what iproute2 (`ip -j -d link`, `ip -j addr`) says about the
same links: a source independent of the parser under test. Everything it made is removed before
it exits.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys
import time
from ipaddress import IPv4Address, IPv4Interface, IPv4Network, IPv6Interface
from typing import Any

from sandman.kernel import nat, net, net_dump, veth
from sandman.kernel.net_facts import IFADDRMSG, link_name
from sandman.units.model import PortForward

HERE = pathlib.Path(__file__).parent
TAG = "smcap"
BRIDGE, VETH = f"{TAG}b-lan", f"{TAG}-web"


def _ip_json(*args: str) -> Any:
    return json.loads(subprocess.run(["ip", "-j", *args], capture_output=True, check=True).stdout)


def _expected_links(names: list[str]) -> dict[str, Any]:
    out = {}
    for link in _ip_json("-d", "link", "show"):
        if link["ifname"] not in names:
            continue
        master = link.get("master")
        out[link["ifname"]] = {
            "index": link["ifindex"],
            "kind": link.get("linkinfo", {}).get("info_kind"),
            "master": None if master is None else _ip_json("link", "show", master)[0]["ifindex"],
            "up": "UP" in link["flags"],
            "operstate": link["operstate"],
            "mac": link.get("address"),
            "peer_index": link.get("link_index"),
            "peer_netns_id": link.get("link_netnsid"),
        }
    return out


def _capture() -> dict[str, Any]:
    names = ["lo", BRIDGE, VETH]
    expected_addresses = {
        str(a["ifindex"]): [f"{i['local']}/{i['prefixlen']}" for i in a["addr_info"]]
        for a in _ip_json("addr", "show")
        if a["ifname"] in names
    }
    links, addresses = net_dump.link_payloads(), net_dump.address_payloads()
    indexes = set(map(int, expected_addresses))
    return {
        "prefix": TAG,
        "links": [p.hex() for p in links if link_name(p) in names],
        "addresses": [p.hex() for p in addresses if IFADDRMSG.unpack_from(p)[4] in indexes],
        "rules": [p.hex() for p in net_dump.rule_payloads(net_dump.table_name(TAG))],
        "expected_links": _expected_links(names),
        "expected_addresses": expected_addresses,
    }


def main() -> None:
    sysctls = ["/proc/sys/net/ipv4/ip_forward", "/proc/sys/net/ipv6/conf/all/forwarding"]
    saved = {path: pathlib.Path(path).read_text() for path in sysctls}
    child = subprocess.Popen(["unshare", "-n", "sleep", "60"])
    try:
        time.sleep(0.2)
        gateway, gateway6 = IPv4Interface("10.231.99.1/24"), IPv6Interface("fd00:231:99::1/64")
        net.ensure_bridge(BRIDGE, gateway, gateway6)
        address, address6 = IPv4Interface("10.231.99.2/24"), IPv6Interface("fd00:231:99::2/64")
        veth.create_veth(VETH, child.pid, BRIDGE, address, gateway.ip, address6=address6,
                        gateway6=gateway6.ip)  # fmt: skip
        nat.ensure_nat(TAG, "lan", IPv4Network("10.231.99.0/24"), True)
        ports = [PortForward(host=48080, sandbox=80, host_address="127.0.0.1"),
                 PortForward(host=48053, sandbox=53, protocol="udp")]  # fmt: skip
        nat.ensure_ports(TAG, "web", IPv4Address("10.231.99.2"), ports, bridge=BRIDGE)
        data = _capture()
    finally:
        nat.remove_table(TAG)
        net.remove_link(VETH)
        net.remove_bridge(BRIDGE)
        child.kill()
        child.wait()
        for path, value in saved.items():
            if pathlib.Path(path).read_text() != value:
                pathlib.Path(path).write_text(value)
    (HERE / "host.json").write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    print(f"wrote {HERE / 'host.json'}", file=sys.stderr)


if __name__ == "__main__":
    if os.geteuid() != 0:
        sys.exit("run as root")
    main()
