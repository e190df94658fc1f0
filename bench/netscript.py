"""The bash script a user would write by hand for sandboxes on one network, as netscale.py and
scale.py time it beside sandman: one `ip` or `nft` process per step; its names and subnets, and
the removal of whatever an interrupted run of it left.

Its network part is the same in both: a bridge with the gateway address, `ip_forward` and the
bridge's `route_localnet` on, one `nft -f` for a table with the guard, the NAT chains and
masquerade (as sandman makes them); per sandbox, once its veth's host end is on the bridge, the
address, eth0 up and the default route inside, and a DNAT rule in prerouting and one in output
for its port forward; at the end, the bridge and the table deleted. Each benchmark puts its own
steps around these (netscale.py a named netns, scale.py a crun container and its cgroups).

The scripts run as `bash FILE N` (N sandboxes), below a header (Names.header) that sets PREFIX,
BRIDGE, TABLE, NET (the subnet's first three octets), PORTS (the first host port minus one) and
whatever a benchmark adds.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import secrets
import subprocess
import textwrap
from collections.abc import Mapping
from dataclasses import dataclass

from harness import BenchError, Cleanup, clean_env, links, nft_tables, wait_links_gone

NETNS_DIR = "/run/netns"
FORWARDING = "/proc/sys/net/ipv4/ip_forward"
# Before the loop: the bridge, forwarding and the table.
NETWORK_SETUP = r"""
ip link add "$BRIDGE" type bridge
ip addr add "$NET.1/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
echo 1 > /proc/sys/net/ipv4/ip_forward
echo 1 > "/proc/sys/net/ipv4/conf/$BRIDGE/route_localnet"
nft -f - <<EOF
table inet $TABLE {
    chain guard { type filter hook prerouting priority raw; iif != "lo" ip daddr 127.0.0.0/8 drop; }
    chain prerouting { type nat hook prerouting priority dstnat; }
    chain output { type nat hook output priority -100; }
    chain postrouting {
        type nat hook postrouting priority srcnat;
        ip saddr 127.0.0.0/8 oif != "lo" masquerade
        ip saddr $NET.0/24 ip daddr != $NET.0/24 masquerade
    }
}
EOF
"""
# First in the loop: sandbox i's names (its netns, and in scale.py its container, is $name).
SANDBOX_NAMES = r"""
name="$PREFIX-$i" veth="${PREFIX}v$i" addr="$NET.$((i + 1))" port=$((PORTS + i))
"""
# In the loop, once eth0 is in the netns $name: the address, the route, the two DNAT rules.
SANDBOX_NETWORK = r"""
ip -n "$name" addr add "$addr/24" dev eth0
ip -n "$name" link set eth0 up
ip -n "$name" route add default via "$NET.1"
nft add rule inet "$TABLE" prerouting ip daddr 127.0.0.1 tcp dport "$port" dnat ip to "$addr:80"
nft add rule inet "$TABLE" output ip daddr 127.0.0.1 tcp dport "$port" dnat ip to "$addr:80"
"""
# After the loop of the teardown.
NETWORK_TEARDOWN = r"""
ip link del "$BRIDGE"
nft delete table inet "$TABLE"
"""


def _lines(text: str) -> str:
    stripped = textwrap.dedent(text).strip("\n")
    return stripped + "\n" if stripped else ""


def per_sandbox(*steps: str, before: str = "", after: str = "") -> str:
    """A script's text: `before`, then `steps` for each sandbox i in 1..$1, then `after`."""
    body = "".join(textwrap.indent(_lines(step), "    ") for step in steps)
    return f'n=$1\n{_lines(before)}for i in $(seq 1 "$n"); do\n{body}done\n{_lines(after)}'


@dataclass(frozen=True)
class Names:
    """The script's objects, all under one random prefix, and two free subnets: sandman's and
    the script's."""

    prefix: str  # nsb + 4 hex: netns PREFIX-I, veths PREFIXvI, bridge PREFIXbr, table PREFIX
    sandman_net: ipaddress.IPv4Network
    script_net: ipaddress.IPv4Network

    @classmethod
    def pick(cls, cleanup: Cleanup) -> Names:
        """A random prefix and two 10.2xx.X.0/24 that overlap no address or route of the host;
        whatever the script leaves under the prefix is removed at the end."""
        used = _used_networks()
        picked: list[ipaddress.IPv4Network] = []
        rng = random.SystemRandom()
        for _ in range(1000):
            net = ipaddress.IPv4Network(f"10.{rng.randint(201, 254)}.{rng.randint(0, 255)}.0/24")
            if not any(net.overlaps(other) for other in (*used, *picked)):
                picked.append(net)
            if len(picked) == 2:
                break
        else:
            raise BenchError("no free 10.2xx.X.0/24 subnet on this host")
        names = cls(f"nsb{secrets.token_hex(2)}", picked[0], picked[1])
        cleanup.add(f"the script's objects ({names.prefix}*)", names.remove_leftovers)
        return names

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    def header(self, ports: int, **more: str) -> str:
        """The lines above the script's text: strict mode and its variables."""
        net = ".".join(str(self.script_net.network_address).split(".")[:3])
        extra = "".join(f" {key}={value}" for key, value in more.items())
        return (
            "#!/bin/bash\nset -euo pipefail\n"
            f"PREFIX={self.prefix} BRIDGE={self.bridge} TABLE={self.prefix} NET={net} "
            f"PORTS={ports}{extra}\n"
        )

    def write(self, workdir: str, head: str, bodies: Mapping[str, str]) -> dict[str, str]:
        """WORKDIR/WHAT.sh for each body, below the header; returns their paths by WHAT."""
        paths = {}
        for what, body in bodies.items():
            paths[what] = os.path.join(workdir, f"{what}.sh")
            with open(paths[what], "w", encoding="utf-8") as handle:
                handle.write(head + body)
        return paths

    def settle(self) -> None:
        wait_links_gone(self.prefix)

    def remove_leftovers(self) -> None:
        """Whatever an interrupted script left: its netns, links and table (crun's containers
        and cgroups are scale.py's)."""
        netns = os.listdir(NETNS_DIR) if os.path.isdir(NETNS_DIR) else []
        for ns in (n for n in netns if n.startswith(f"{self.prefix}-")):
            _quiet("ip", "netns", "del", ns)
        for link in (n for n in links() if n.startswith(self.prefix)):
            _quiet("ip", "link", "del", link)
        if self.prefix in nft_tables():
            _quiet("nft", "delete", "table", "inet", self.prefix)
        with contextlib.suppress(BenchError):
            self.settle()
        left = [f"link {n}" for n in links() if n.startswith(self.prefix)]
        left += [f"table inet {self.prefix}"] if self.prefix in nft_tables() else []
        if left:
            raise BenchError(f"the script's objects are still there: {', '.join(left[:5])}")


def _quiet(*argv: str) -> None:
    subprocess.run(argv, env=clean_env(), capture_output=True, check=False)


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 address and route prefix the host has, in any table."""
    found = []
    for argv in (("ip", "-4", "-o", "addr", "show"), ("ip", "-4", "route", "show", "table", "all")):
        output = subprocess.run(argv, capture_output=True, text=True, check=False).stdout
        for token in (t for t in output.split() if t.count(".") == 3):
            with contextlib.suppress(ValueError):
                found.append(ipaddress.IPv4Network(token, strict=False))
    return found
