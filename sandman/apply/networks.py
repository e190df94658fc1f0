"""Networks on the host (a bridge, forwarding, NAT, the forward policy) and each sandbox's side of
them (its source filter, a veth pair born in its netns, its address and routes, its port
forwards)."""

from __future__ import annotations

import os
import time
from typing import Any

from sandman.apply import faults
from sandman.apply.context import ApplyContext
from sandman.kernel.net_facts import ANTISPOOF, FORWARD, PORT
from sandman.observe.facts import Record, Runtime
from sandman.observe.records import record_of, remove_record, write_record
from sandman.units.desired import DesiredNetwork, DesiredSandbox


def create(ctx: ApplyContext, network: DesiredNetwork) -> Record:
    from sandman.kernel import net

    net.ensure_bridge(network.bridge, network.gateway, network.gateway6)
    faults.step(f"network/{network.name}: bridge up")
    record = update(ctx, network)
    _warn_of_forward_drops(ctx, network)
    return record


def _warn_of_forward_drops(ctx: ApplyContext, network: DesiredNetwork) -> None:
    """Another table's forward chain that drops by default (Docker's) drops what sandman's
    forward policy lets through, whatever sandman's own chain accepts: say which, and what to
    add there. sandman writes no rule into another's table."""
    from sandman.kernel import net_dump
    from sandman.kernel.net_facts import forward_drops

    for chain in forward_drops(net_dump.dump_chains(), net_dump.table_name(ctx.paths.tag)):
        ctx.progress.note(
            f"warning: network/{network.name}: {chain.where} drops forwarded packets by default "
            f"(policy drop), so its sandboxes reach nothing beyond the host and their published "
            f"ports answer only the host; accept there what comes in or goes out through "
            f"{network.bridge} (sandman's own chain still drops what is not published), e.g. "
            f"`iptables -I DOCKER-USER -i {network.bridge} -j ACCEPT` and the same with -o"
        )


def _ensure_nat(ctx: ApplyContext, network: DesiredNetwork) -> None:
    from sandman.kernel import nat

    six = network.gateway6.network if network.gateway6 else None
    nat.ensure_nat(
        ctx.paths.tag, network.name, network.gateway.network, network.unit.network.nat, six
    )


def update(ctx: ApplyContext, network: DesiredNetwork) -> Record:
    from sandman.kernel import nat

    _ensure_nat(ctx, network)
    faults.step(f"network/{network.name}: NAT rules written")
    nat.ensure_forward(ctx.paths.tag, network.name, network.bridge)
    record = record_of(
        "network", network.name, network.canonical(), Runtime(bridge=network.bridge), network.file
    )
    write_record(ctx.paths.state_dir, record)
    ctx.records[record.key] = record
    return record


def destroy(ctx: ApplyContext, record: Record, keep_table: bool = False) -> None:
    """Its sandboxes are gone by now (the plan orders them first): the bridge, its NAT rules and,
    with the last network, the instance's table (only once no bridge needs its loopback guard)."""
    from sandman.kernel import links, nat

    bridge = record.runtime.bridge or record.network.bridge
    if bridge is not None:
        links.delete_link(bridge)
        faults.step(f"network/{record.name}: bridge removed")
    if not ctx.table_goes:
        nat.ensure_nat(ctx.paths.tag, record.name, _subnet(record), False)
        faults.step(f"network/{record.name}: NAT rules removed")
        nat.remove_rules(ctx.paths.tag, FORWARD, record.name)
    remove_record(ctx.paths.state_dir, "network", record.name)
    ctx.records.pop(record.key, None)
    if not keep_table and not any(kind == "network" for kind, _ in ctx.records):
        nat.remove_table(ctx.paths.tag)


def _subnet(record: Record) -> Any:
    from ipaddress import IPv4Network

    return IPv4Network(record.network.subnet)


def attach(ctx: ApplyContext, sandbox: DesiredSandbox, pid: int) -> None:
    """The sandbox's source filter, then its veth (peer born as eth0 in its netns), addresses,
    routes and port forwards. Idempotent: also the repair of a deleted veth, address or rule.
    The filter comes first: it names the veth, so no frame of the sandbox passes unfiltered."""
    from sandman.kernel import source_filter, veth

    assert sandbox.unit.network is not None and sandbox.veth and sandbox.address
    network = ctx.desired.networks[sandbox.unit.network.attach]
    six = sandbox.address6.ip if sandbox.address6 else None
    source = source_filter.source_of(sandbox.veth, sandbox.address.ip, six)
    none_yet = _observed_without(ctx, ANTISPOOF, sandbox.name, ctx.filters_written)
    source_filter.ensure(ctx.paths.tag, sandbox.name, source, none_yet=none_yet)
    ctx.filters_written.add(sandbox.name)
    veth.create_veth(
        sandbox.veth,
        pid,
        network.bridge,
        sandbox.address,
        network.gateway.ip,
        address6=sandbox.address6,
        gateway6=network.gateway6.ip if network.gateway6 else None,
    )
    faults.step(f"sandbox/{sandbox.name}: veth made")
    update_ports(ctx, sandbox)
    faults.step(f"sandbox/{sandbox.name}: port forwards written")


def update_ports(ctx: ApplyContext, sandbox: DesiredSandbox) -> None:
    """The sandbox's port forwards are exactly its unit's (one nf_tables batch, none if equal)."""
    from sandman.kernel import nat

    if sandbox.unit.network is None or sandbox.address is None:
        nat.remove_ports(ctx.paths.tag, sandbox.name)
        return
    network = ctx.desired.networks[sandbox.unit.network.attach]
    nat.ensure_ports(
        ctx.paths.tag,
        sandbox.name,
        sandbox.address.ip,
        sandbox.unit.network.ports,
        bridge=network.bridge,
        address6=sandbox.address6.ip if sandbox.address6 else None,
        none_yet=ctx.port_table_ready
        and _observed_without(ctx, PORT, sandbox.name, ctx.ports_written),
    )
    ctx.ports_written.add(sandbox.name)
    ctx.port_table_ready = ctx.port_table_ready or bool(sandbox.unit.network.ports)


def _observed_without(ctx: ApplyContext, kind: str, name: str, written: set[str]) -> bool:
    """Whether the tables held no rule of `kind` ("port", "antispoof") of sandbox `name` when
    observed, and this apply wrote none since (`written`): its rules can then be added without
    reading the table first."""
    owners = ctx.actual.rule_owners
    return owners is not None and (kind, name) not in owners and name not in written


def detach(ctx: ApplyContext, record: Record) -> None:
    """The sandbox's port forwards go now (unless the whole table goes with the last network
    of this apply, one request for all), its veth at the end of the apply (settle_veths)."""
    if record.sandbox.network:
        if not ctx.table_goes:
            detach_sandbox(ctx, record.name)
        if record.sandbox.veth is not None:
            ctx.stopped_veths.append(record.sandbox.veth)


# How long the kernel gets to delete stopped sandboxes' veths with their netns, in seconds.
VETH_SETTLE = 1.0


def settle_veths(ctx: ApplyContext) -> None:
    """The host ends of stopped sandboxes' veths are gone when the apply ends.

    The kernel deletes a veth with its netns, many at once with one RCU grace period for the
    lot, but asynchronously, and never while anything else holds the netns open (an `ip netns
    attach`, an `nsenter`). Deleting each one ourselves costs a grace period each (25 ms per
    sandbox), so the kernel gets a moment first, and what it leaves is deleted then."""
    from sandman.kernel import links

    in_use = {  # a recreated sandbox's new veth has its old one's name; a stopped one has none
        record.sandbox.veth
        for (kind, _), record in ctx.records.items()
        if kind == "sandbox" and not record.stopped
    }
    pending = [n for n in ctx.stopped_veths if n not in in_use and _link_exists(n)]
    deadline = time.monotonic() + VETH_SETTLE
    pause = 0.0005
    while pending and time.monotonic() < deadline:
        time.sleep(pause)
        pause = min(pause * 2, 0.02)
        pending = [name for name in pending if _link_exists(name)]
    for name in pending:
        links.delete_link(name)
    ctx.stopped_veths.clear()


def _link_exists(name: str) -> bool:
    return os.path.exists(f"/sys/class/net/{name}")


def detach_sandbox(ctx: ApplyContext, name: str) -> None:
    from sandman.kernel import nat, source_filter

    nat.remove_ports(ctx.paths.tag, name)
    faults.step(f"sandbox/{name}: port forwards removed")
    source_filter.remove(ctx.paths.tag, name)
