"""/etc/hosts and /etc/resolv.conf of the sandboxes on a network: written under each one's runtime
dir, bound read-only into it, rewritten in place when the network's members change. A booted
sandbox without a network gets them too, as nspawn gives a booted container: its own names, and
the host's resolv.conf where it shares the host's network (nspawn's --resolv-conf=auto)."""

from __future__ import annotations

import os

from sandman.apply.context import ApplyContext
from sandman.units.desired import DesiredSandbox


def name_files(ctx: ApplyContext, sandbox: DesiredSandbox) -> dict[str, str]:
    """/etc/hosts and /etc/resolv.conf for the sandbox, written under its runtime dir and bound
    read-only into it. Every sandbox of its network is listed, so they reach each other by name."""
    # A target the unit mounts something on itself is left to that mount.
    taken = {mount.target for mount in sandbox.unit.mount}
    texts = {target: text for target, text in _texts(ctx, sandbox).items() if target not in taken}
    if not texts:
        return {}
    runtime = ctx.runtime_dir(sandbox.name)
    os.makedirs(runtime, mode=0o755, exist_ok=True)
    files = {}
    for target, text in texts.items():
        files[target] = os.path.join(runtime, os.path.basename(target))
        write_in_place(files[target], text)
    return files


def _texts(ctx: ApplyContext, sandbox: DesiredSandbox) -> dict[str, str]:
    if sandbox.unit.network is not None:
        return {"/etc/hosts": hosts_text(ctx, sandbox), "/etc/resolv.conf": resolv_text()}
    if not sandbox.unit.sandbox.boot:
        return {}  # a command's image keeps its own files
    texts = {"/etc/hosts": own_hosts_text(sandbox.hostname)}
    if not sandbox.unit.namespaces.net:
        # The host's network: its resolvers, loopback ones included, answer the sandbox too. In
        # a network namespace of its own with no network nothing does: the image's file stays.
        texts["/etc/resolv.conf"] = host_resolv_text()
    return texts


def own_hosts_text(hostname: str) -> str:
    """localhost, and the hostname on 127.0.1.1 as Debian's installer writes it."""
    return (
        f"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{hostname}\n"
    )


def host_resolv_text() -> str:
    """The host's resolv.conf as it is (nspawn's copy-host), or an empty one where it has none."""
    try:
        with open("/etc/resolv.conf", encoding="utf-8") as handle:
            return handle.read()
    except OSError:
        return "# the host has no /etc/resolv.conf\n"


def hosts_text(ctx: ApplyContext, sandbox: DesiredSandbox) -> str:
    attach_to = sandbox.unit.network.attach if sandbox.unit.network else None
    # A stopped member is left out: its name would lead to an address nobody answers on.
    stopped = frozenset(name for name in ctx.stop_candidates if _stopped(ctx, name))
    key = (attach_to, stopped)
    if key not in ctx.hosts_texts:
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        lines += [line for name, line in _member_lines(ctx, attach_to) if name not in stopped]
        ctx.hosts_texts[key] = "\n".join(lines) + "\n"
    return ctx.hosts_texts[key]


def _member_lines(ctx: ApplyContext, network: str | None) -> list[tuple[str, str]]:
    """(sandbox name, hosts line) of every desired sandbox on `network`, made once per apply:
    each member's file lists all members, and formatting them again for each (a million
    addresses for 1000 sandboxes) was most of the cost of a big apply."""
    if network not in ctx.hosts_lines:
        found = []
        for other in sorted(ctx.desired.sandboxes.values(), key=lambda s: s.name):
            if other.unit.network is None or other.unit.network.attach != network:
                continue
            names = (
                other.hostname if other.hostname == other.name else f"{other.hostname} {other.name}"
            )
            for address in (other.address, other.address6):
                if address is not None:
                    found.append((other.name, f"{address.ip}\t{names}"))
        ctx.hosts_lines[network] = found
    return ctx.hosts_lines[network]


def _stopped(ctx: ApplyContext, name: str) -> bool:
    record = ctx.records.get(("sandbox", name))
    return record is not None and record.stopped


def resolv_text() -> str:
    """The host's name servers, except loopback ones (a local resolver the sandbox cannot reach)."""
    try:
        with open("/etc/resolv.conf", encoding="utf-8") as handle:
            host = handle.read().splitlines()
    except OSError:
        host = []
    kept = [
        line
        for line in host
        if line.startswith(("nameserver", "search", "options"))
        and not line.split()[-1].startswith(("127.", "::1"))
    ]
    return "\n".join(["# written by sandman from the host's /etc/resolv.conf", *kept]) + "\n"


def write_in_place(path: str, text: str) -> None:
    """Rewrite the same inode: a running sandbox has it bound in, and sees the new content."""
    try:
        with open(path, encoding="utf-8") as handle:
            if handle.read() == text:
                return
    except FileNotFoundError:
        pass
    with open(path, "a+", encoding="utf-8") as handle:
        handle.seek(0)
        handle.truncate()
        handle.write(text)


def refresh_hosts(ctx: ApplyContext) -> None:
    """After an apply, every running sandbox on a network lists the current members (a stopped
    sandbox's runtime dir, and its hosts file with it, is gone)."""
    for sandbox in ctx.desired.sandboxes.values():
        path = os.path.join(ctx.runtime_dir(sandbox.name), "hosts")
        if sandbox.unit.network is not None and os.path.exists(path):
            write_in_place(path, hosts_text(ctx, sandbox))
