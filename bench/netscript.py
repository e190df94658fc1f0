"""The bash script a user would write by hand for sandboxes on one network, as netscale.py and
scale.py time it beside sandman: one `ip` or `nft` process per step.

Its network part is the same in both: a bridge with the gateway address, `ip_forward` and the
bridge's `route_localnet` on, one `nft -f` for a table with the guard, the NAT chains and
masquerade (as sandman makes them); per sandbox, once its veth's host end is on the bridge, the
address, eth0 up and the default route inside, and a DNAT rule in prerouting and one in output
for its port forward; at the end, the bridge and the table deleted. Each benchmark puts its own
steps around these (netscale.py a named netns, scale.py a crun container and its cgroups).

The scripts run as `bash FILE N` (N sandboxes), below a header (netscale.Names.script_header)
that sets PREFIX, BRIDGE, TABLE, NET (the subnet's first three octets), PORTS (the first host
port minus one) and whatever a benchmark adds.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Mapping

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


def write_scripts(workdir: str, head: str, bodies: Mapping[str, str]) -> dict[str, str]:
    """WORKDIR/WHAT.sh for each body, below the header; returns their paths by WHAT."""
    paths = {}
    for what, body in bodies.items():
        path = os.path.join(workdir, f"{what}.sh")
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(head + body)
        paths[what] = path
    return paths
