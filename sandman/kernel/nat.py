"""NAT, port forwards and the forward policy of sandman's networks: one nf_tables table per
instance, over netlink.

The table is `inet sandman_<tag>`, with five chains (nft_rules.CHAINS): `guard` (filter,
prerouting, raw priority), `prerouting` and `output` (nat, dstnat: port forwards, for packets from
elsewhere and from the host itself), `postrouting` (nat, srcnat: masquerade) and `forward`
(filter: what may enter a network, nft_filter.py). Every rule carries a comment "KIND OWNER SPEC"
(net_facts.RuleFact), so observe finds a network's or a sandbox's rules, and what they do, in one
dump, and two instances never touch each other's rules. The bridge table of the same name, with
each sandbox's source filter, is source_filter.py's.

Why nf_tables over netlink, and not iptables or `nft`: sandman does not shell out, and the
kernel's nf_tables is there whether the host's userspace is nftables or iptables-legacy (both
can hook NAT at once; inet nat chains need Linux 5.2). Each change is ONE batch, which the kernel
applies whole or not at all, and a change to nothing sends nothing. The messages are encoded
here (nft_rules.py, netlink.py): pyroute2's NFTables front end commits one message per
transaction, and its message classes took 6 ms to encode 8 rules and 7 ms to close a socket
after a commit (26 ms per ensure_ports); with a plain socket it is 1.5 ms.

Port forwards from the host's own 127.0.0.1 are DNATed in `output`; such packets leave through
the bridge with a loopback source, which the kernel drops unless the bridge has route_localnet=1.
That is set per bridge, not on `all`, and it would let a sandbox reach the host's loopback-only
services through its gateway, so the table's `guard` drops every packet for 127.0.0.0/8 that
did not come from `lo` (kube-proxy's CVE-2020-8558 fix). Not handled: another firewall whose
forward policy drops (Docker sets iptables FORWARD to DROP: a drop in any base chain wins, and an
accept in this table ends only this table's chain; the README says what to add there); a sandbox
reaching its own port forward through the host's address (hairpin, needs a masquerade of that
flow); IPv6 forwards from ::1 (IPv6 has no route_localnet: a reply for ::1 that arrives on a
bridge fails the strict route lookup for loopback, even masqueraded on the way out; they work
from the host's other addresses and from elsewhere).

Idempotency lives here: a missing table is "no rules" when reading and ENOENT is success when
deleting it; a rule whose handle vanished between dump and commit (ENOENT) makes one fresh attempt.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import suppress
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Protocol

from sandman.kernel import net_dump, netlink, nft_filter, nft_rules, sysctl
from sandman.kernel.net_dump import table_name
from sandman.kernel.net_facts import (
    BASE,
    FORWARD,
    NAT,
    NFPROTO_BRIDGE,
    NFPROTO_INET,
    NFTA_RULE_CHAIN,
    PORT,
    RuleFact,
    parse_rule,
)
from sandman.kernel.nft_rules import CHAINS, Forward, Rule


class PortForward(Protocol):
    """What a port forward says, as this module reads it (a unit's [[network.ports]] entry fits:
    the kernel layer states what it needs and imports no unit model)."""

    @property
    def host(self) -> int: ...
    @property
    def sandbox(self) -> int: ...
    @property
    def protocol(self) -> str: ...
    @property
    def host_address(self) -> str | None: ...


__all__ = [
    "dump_rules",
    "ensure_forward",
    "ensure_nat",
    "ensure_ports",
    "remove_ports",
    "remove_rules",
    "remove_table",
    "table_name",
]


def dump_rules(tag: str) -> tuple[RuleFact, ...]:
    """Every rule of the instance's table (none if the table is missing): one dump."""
    return net_dump.dump_rules(tag)


def ensure_nat(
    tag: str,
    network_name: str,
    subnet: IPv4Network,
    enabled: bool,
    subnet6: IPv6Network | None = None,
) -> None:
    """Masquerade what leaves the network's subnets when `enabled`; no NAT rule otherwise."""
    subnets = (subnet,) if subnet6 is None else (subnet, subnet6)
    desired = nft_rules.nat_rules(network_name, subnets) if enabled else ()
    _reconcile(table_name(tag), NAT, network_name, desired)


def ensure_forward(tag: str, network_name: str, bridge: str) -> None:
    """Only traffic within the network, replies and published ports enter `bridge` through the
    host's forwarding (nft_filter.forward_rules)."""
    _reconcile(
        table_name(tag), FORWARD, network_name, nft_filter.forward_rules(network_name, bridge)
    )


def ensure_ports(
    tag: str,
    sandbox_name: str,
    address: IPv4Address,
    ports: Sequence[PortForward],
    *,
    bridge: str,
    address6: IPv6Address | None = None,
    none_yet: bool = False,
) -> None:
    """The sandbox's port forwards are exactly `ports`: DNAT to `address` (or `address6` for an
    IPv6 `host_address`; without one, both), from other hosts and from the host itself.

    `none_yet`: the caller knows the sandbox has no rule and the table its chains and base
    rules; the rules are then added without a dump of the table (one for each of 1000 new
    sandboxes was most of their creation). Where the table says otherwise (a chain is missing),
    the full reconcile follows.

    A forward on 127.0.0.1 (or on every address) needs route_localnet on the sandbox's `bridge`,
    turned on here after the table's guard exists; it stays on while the bridge lives.
    """
    desired = tuple(r for pf in ports for r in _forward_rules(sandbox_name, address, address6, pf))
    if not (none_yet and _add(table_name(tag), desired)):
        _reconcile(table_name(tag), PORT, sandbox_name, desired)
    if any(nft_rules.loopback_reachable(pf.host_address) for pf in ports):
        sysctl.ensure(sysctl.route_localnet(bridge), "1")


def remove_ports(tag: str, sandbox_name: str) -> None:
    _reconcile(table_name(tag), PORT, sandbox_name, ())


def remove_rules(tag: str, kind: str, owner: str) -> None:
    """Every rule of `kind` ("nat", "port", "forward") that `owner` has, in one batch; none is
    success."""
    _reconcile(table_name(tag), kind, owner, ())


def remove_table(tag: str) -> None:
    """Drop the instance's tables, inet and bridge, and every rule in them; call it once the
    instance's bridges are gone, as its guard protects their route_localnet. A missing table is
    success."""
    for family, where in ((NFPROTO_INET, "inet"), (NFPROTO_BRIDGE, "bridge")):
        with suppress(FileNotFoundError):
            request = nft_rules.delete_table(table_name(tag), family)
            netlink.batch([request], f"{where} {table_name(tag)}")


def _forward_rules(
    sandbox: str, address: IPv4Address, address6: IPv6Address | None, pf: PortForward
) -> tuple[Rule, ...]:
    listen = None if pf.host_address is None else ip_address(pf.host_address).version
    targets = [t for t in (address, address6) if t is not None and listen in (None, t.version)]
    if not targets:
        raise ValueError(f"port {pf.host} on {pf.host_address}: the sandbox has no IPv6 address")
    forwards = [Forward(pf.protocol, pf.host, pf.host_address, t, pf.sandbox) for t in targets]
    return tuple(r for f in forwards for r in nft_rules.port_rules(sandbox, f))


def _reconcile(table: str, kind: str, owner: str, desired: tuple[Rule, ...]) -> None:
    """Make `owner`'s rules of `kind` exactly `desired`, in one transaction, or do nothing."""
    wanted = sorted((r.chain, r.comment) for r in desired)
    for attempt in (1, 2):
        payloads = net_dump.rule_payloads(table)
        mine = _rules_of(payloads, kind, owner)
        if sorted((f.chain, f.comment) for f in mine) == wanted:
            return
        requests = _base_requests(table, payloads) if desired else []
        requests += [nft_rules.delete_rule(table, f.chain, f.handle, f.comment) for f in mine]
        requests += [nft_rules.new_rule(table, r) for r in desired]
        try:
            netlink.batch(requests, f"inet {table}")
            return
        except FileNotFoundError:
            if attempt == 2:  # a rule we meant to delete went first: look again, once
                raise


def _add(table: str, rules: tuple[Rule, ...]) -> bool:
    """Add `rules` in one transaction; False where a chain or the table is missing."""
    if not rules:
        return True
    try:
        netlink.batch([nft_rules.new_rule(table, r) for r in rules], f"inet {table}")
    except FileNotFoundError:
        return False
    return True


def _rules_of(payloads: list[bytes], kind: str, owner: str) -> list[RuleFact]:
    """The rules of the inet table whose comment names `kind` and `owner`. Only the payloads
    holding the comment's bytes are parsed: parsing every rule of the table for each sandbox
    made the creation of 1000 sandboxes parse a million rules (quadratic)."""
    marker = f"{kind} {owner} ".encode()
    facts = (parse_rule(p) for p in payloads if marker in p)
    return [f for f in facts if (f.family, f.kind, f.owner) == (NFPROTO_INET, kind, owner)]


def _base_requests(table: str, payloads: list[bytes]) -> list[netlink.Request]:
    """The table, its chains and its own rules, where missing. A rule in every chain proves the
    chains exist; otherwise NEWTABLE and NEWCHAIN are sent, which leave existing ones alone."""
    present = {(f.chain, f.comment) for f in _rules_of_kind(payloads, BASE)}
    base = [
        nft_rules.new_rule(table, r)
        for r in nft_rules.base_rules()
        if (r.chain, r.comment) not in present
    ]
    rules = b"".join(payloads)
    if all(_has_chain(rules, c.name) for c in CHAINS):
        return base
    return [nft_rules.new_table(table), *(nft_rules.new_chain(table, c) for c in CHAINS), *base]


def _rules_of_kind(payloads: list[bytes], kind: str) -> list[RuleFact]:
    marker = f"{kind} ".encode()
    facts = (parse_rule(p) for p in payloads if marker in p)
    return [f for f in facts if (f.family, f.kind) == (NFPROTO_INET, kind)]


def _has_chain(rules: bytes, chain: str) -> bool:
    """Whether a rule is in `chain`: its NFTA_RULE_CHAIN attribute, header and name, is in the
    rules' bytes (one search, nothing decoded)."""
    return netlink.nla(NFTA_RULE_CHAIN, netlink.asciiz(chain)) in rules
