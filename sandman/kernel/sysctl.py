"""Writes to /proc/sys that networking needs: forwarding, route_localnet."""

from __future__ import annotations

FORWARDING = {4: "/proc/sys/net/ipv4/ip_forward", 6: "/proc/sys/net/ipv6/conf/all/forwarding"}


def route_localnet(link: str) -> str:
    return f"/proc/sys/net/ipv4/conf/{link}/route_localnet"


def ensure(path: str, value: str) -> None:
    """Write a /proc/sys value unless it already holds it: a write is not free (writing
    ip_forward resets the forwarding setting of every interface)."""
    with open(path) as f:
        if f.read().strip() == value:
            return
    with open(path, "w") as f:
        f.write(value)
