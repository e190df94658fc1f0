"""Each sandbox's source filter, in the instance's bridge table `bridge sandman_<tag>`, over
netlink: one batch per change, none when the rules are already there (nft_filter.py builds them).

Why a bridge table and not a netdev ingress chain on each veth: a netdev base chain names its
device, so it can only be made once the veth exists, and what becomes of it when the veth goes
with its netns changed across kernels (deleted with it, kept unbound, rebound by name since
6.16); the bridge table's rules name the veth as a string, are written before the veth exists
(the sandbox never sends a frame unfiltered, not even while a deleted veth is made again) and
outlive it. Its cost is one `iifname` compare per sandbox of the instance for each frame bridged:
each sandbox's checks sit in a chain of its own, entered by one jump from the base chain.

Idempotency lives here as in nat.py: the rules of a sandbox are compared by their comments, a
missing table is "no rules", a rule that vanished between dump and commit makes one fresh attempt.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from sandman.kernel import net_dump, netlink, nft_filter, nft_rules
from sandman.kernel.net_dump import table_name
from sandman.kernel.net_facts import ANTISPOOF, NFPROTO_BRIDGE, RuleFact, derive_mac, parse_rule
from sandman.kernel.nft_filter import BRIDGE_CHAIN, Source, filter_chain
from sandman.kernel.nft_rules import Rule


def source_of(veth: str, address: IPv4Address, address6: IPv6Address | None) -> Source:
    """What the sandbox behind `veth` may send as: the MAC veth.create_veth gives its eth0."""
    return Source(veth, derive_mac(veth, "peer"), address, address6)


def ensure(tag: str, sandbox: str, source: Source, *, none_yet: bool = False) -> None:
    """The sandbox's frames are filtered as `source` says, and by nothing older.

    `none_yet`: the caller knows the table holds no rule of the sandbox (observed without any,
    none written since): its rules are then added in one batch without the dumps that find its
    old ones (the base chain's holds a jump per sandbox: creating N sandboxes read N² rules)."""
    table, desired = table_name(tag), nft_filter.source_rules(sandbox, source)
    if none_yet:
        netlink.batch(_requests(table, sandbox, [], desired), f"bridge {table}")
        return
    _sync(table, sandbox, desired)


def remove(tag: str, sandbox: str) -> None:
    """The sandbox's chain and its jump are gone; none there is success."""
    _sync(table_name(tag), sandbox, ())


def _sync(table: str, sandbox: str, desired: tuple[Rule, ...]) -> None:
    wanted = sorted((r.chain, r.comment) for r in desired)
    for attempt in (1, 2):
        mine = _rules_of(table, sandbox)
        if sorted((f.chain, f.comment) for f in mine) == wanted:
            return
        old = [
            nft_rules.delete_rule(table, f.chain, f.handle, f.comment, NFPROTO_BRIDGE) for f in mine
        ]
        try:
            netlink.batch(_requests(table, sandbox, old, desired), f"bridge {table}")
            return
        except FileNotFoundError:
            if attempt == 2:  # a rule we meant to delete went first: look again, once
                raise


def _rules_of(table: str, sandbox: str) -> list[RuleFact]:
    """The sandbox's rules: its own chain and its jump in the base chain, two dumps of those
    chains alone, and only the rules whose comment names it parsed: a dump of the whole table
    for each sandbox made the creation of N sandboxes cost N² rules read."""
    marker = f"{ANTISPOOF} {sandbox} ".encode()
    found = []
    for chain in (filter_chain(sandbox), BRIDGE_CHAIN.name):
        payloads = net_dump.rule_payloads(table, NFPROTO_BRIDGE, chain)
        found += [parse_rule(p) for p in payloads if marker in p]
    return [f for f in found if (f.kind, f.owner) == (ANTISPOOF, sandbox)]


def _requests(
    table: str, sandbox: str, old: list[netlink.Request], desired: tuple[Rule, ...]
) -> list[netlink.Request]:
    """Removing: the old rules, then the sandbox's chain (which holds a rule of its whenever any
    is left: a jump keeps its chain, and the two are made in one batch). Writing: the table and
    chains where missing (NEWTABLE and NEWCHAIN keep existing ones), the old rules out, the new
    in."""
    chain = filter_chain(sandbox)
    if not desired:
        return [*old, nft_rules.delete_chain(table, chain, NFPROTO_BRIDGE)]
    return [
        nft_rules.new_table(table, NFPROTO_BRIDGE),
        nft_rules.new_chain(table, BRIDGE_CHAIN, NFPROTO_BRIDGE),
        nft_rules.new_regular_chain(table, chain, NFPROTO_BRIDGE),
        *old,
        *(nft_rules.new_rule(table, r, NFPROTO_BRIDGE) for r in desired),
    ]
