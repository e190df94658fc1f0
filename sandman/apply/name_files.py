"""/etc/hosts and /etc/resolv.conf of the sandboxes: written under each one's runtime dir, bound
read-only into it; on a network, rewritten in place when the network's members change."""

from __future__ import annotations

import os

from sandman.apply.context import ApplyContext
from sandman.units.desired import DesiredSandbox


def name_files(ctx: ApplyContext, sandbox: DesiredSandbox) -> dict[str, str]:
    """/etc/hosts and /etc/resolv.conf for the sandbox, written under its runtime dir and bound
    read-only into it. Every sandbox of its network is listed, so they reach each other by name."""
    runtime = ctx.runtime_dir(sandbox.name)
    os.makedirs(runtime, mode=0o755, exist_ok=True)
    files = {
        "/etc/hosts": os.path.join(runtime, "hosts"),
        "/etc/resolv.conf": os.path.join(runtime, "resolv.conf"),
    }
    write_in_place(files["/etc/hosts"], hosts_text(ctx, sandbox))
    write_in_place(files["/etc/resolv.conf"], resolv_text())
    return files


def offline_files(ctx: ApplyContext, sandbox: DesiredSandbox) -> dict[str, str]:
    """/etc/hosts (and, sharing the host's network, /etc/resolv.conf) for a sandbox on no
    network, as nspawn's --resolv-conf=auto gives one: its own name resolves (an image made by
    mmdebstrap has no /etc/hosts), and a sandbox in the host's network namespace uses the host's
    resolvers, loopback ones too (a resolver listening there is as reachable as from the host).
    A sandbox in a network namespace of its own reaches no resolver: its image's file stays.
    A target the unit mounts something on itself is left to that mount."""
    taken = {mount.target for mount in sandbox.unit.mount}
    runtime = ctx.runtime_dir(sandbox.name)
    os.makedirs(runtime, mode=0o755, exist_ok=True)
    host_network = not sandbox.unit.namespaces.net
    texts = {"/etc/hosts": _own_hosts_text(sandbox.hostname, host_network)}
    if host_network:
        texts["/etc/resolv.conf"] = _host_file("/etc/resolv.conf")
    files = {}
    for target, text in texts.items():
        if target not in taken:
            files[target] = os.path.join(runtime, os.path.basename(target))
            write_in_place(files[target], text)
    return files


def _own_hosts_text(hostname: str, host_network: bool) -> str:
    """localhost, the sandbox's own name on 127.0.1.1 (Debian's convention for a machine without
    a fixed address), and in the host's network the host's own entries after them."""
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    lines.append(f"127.0.1.1\t{hostname}")
    if host_network:
        lines += ["# the host's /etc/hosts", *_host_file("/etc/hosts").splitlines()]
    return "\n".join(lines) + "\n"


def _host_file(path: str) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return ""


def hosts_text(ctx: ApplyContext, sandbox: DesiredSandbox) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    attach_to = sandbox.unit.network.attach if sandbox.unit.network else None
    for other in sorted(ctx.desired.sandboxes.values(), key=lambda s: s.name):
        if other.unit.network is None or other.unit.network.attach != attach_to:
            continue
        if _stopped(ctx, other.name):  # its name would lead to an address nobody answers on
            continue
        names = other.hostname if other.hostname == other.name else f"{other.hostname} {other.name}"
        for address in (other.address, other.address6):
            if address is not None:
                lines.append(f"{address.ip}\t{names}")
    return "\n".join(lines) + "\n"


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
