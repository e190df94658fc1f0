"""What would make a planned change fail half-way, found before anything is stopped.

A unit can be valid and still unable to run on this host: its image is missing, a bind source is
gone, its command does not exist in the image, a host port it forwards is already served by
another process (the forward would silently shadow it), its network's subnet overlaps the host's
own addresses or routes. apply used to find these while creating, after a recreate had already
stopped the running sandbox. These checks read the host (nothing changes) for the objects the
plan creates, recreates or updates, and report unit problems (file, key, what, how to fix) that
`plan` and `apply` turn into exit 2 with the host untouched.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from sandman.booting import INIT_PATHS
from sandman.errors import UnitProblem
from sandman.paths import Paths
from sandman.units.desired import Desired, DesiredNetwork, DesiredSandbox

_CHANGING = ("create", "recreate", "update", "start")  # a start is a create from the record


class Change(NamedTuple):
    """A planned change, as these checks need it (the plan's Action carries more)."""

    kind: str  # create, recreate, update, start
    object_kind: str  # sandbox, network, slice
    name: str
    keys: frozenset[str]  # the unit keys an update changes


_DEFAULT_PATH = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
_TCP_LISTEN, _UDP_BOUND = "0A", "07"  # socket states in /proc/net/{tcp,udp}


def check(paths: Paths, desired: Desired, actions: Sequence[Change]) -> list[UnitProblem]:
    problems: list[UnitProblem] = []
    ports = _HostPorts()
    for action in actions:
        if action.kind not in _CHANGING:
            continue
        if action.object_kind == "sandbox" and action.name in desired.sandboxes:
            sandbox = desired.sandboxes[action.name]
            problems += _sandbox(paths, sandbox, action, ports)
        elif action.object_kind == "network" and action.kind != "update":
            problems += _network(paths, desired.networks[action.name])
    return problems


def _sandbox(
    paths: Paths, sandbox: DesiredSandbox, action: Change, ports: _HostPorts
) -> list[UnitProblem]:
    if action.kind == "update":
        return list(_ports(sandbox, ports)) if "network.ports" in action.keys else []
    problems = list(_root_and_mounts(paths, sandbox))
    if not problems:
        problems += _command(paths, sandbox)
    return problems + list(_ports(sandbox, ports))


def _problem(unit: DesiredSandbox | DesiredNetwork, key: str, what: str, hint: str) -> UnitProblem:
    return UnitProblem(unit.file, key, what, None, hint)


def _root_and_mounts(paths: Paths, sandbox: DesiredSandbox) -> Iterator[UnitProblem]:
    from sandman.units.plain import BindMount, OverlayMount

    root = _root(paths, sandbox)
    if not os.path.isdir(root):
        key = "rootfs.image" if sandbox.unit.rootfs.image else "rootfs.path"
        hint = (
            f"import it with `sandman image import {sandbox.unit.rootfs.image} TARBALL` "
            "(or `sandman image busybox`)"
            if sandbox.unit.rootfs.image
            else "create it or point rootfs.path elsewhere"
        )
        yield _problem(sandbox, key, f"`{root}` is not a directory", hint)
    for index, mount in enumerate(sandbox.unit.mount):
        sources = [("source", mount.source)] if isinstance(mount, BindMount) else []
        if isinstance(mount, OverlayMount):
            sources = [("lower", path) for path in mount.lower]
        for key, path in sources:
            if not os.path.exists(path):
                yield _problem(
                    sandbox,
                    f"mount[{index}].{key}",
                    f"`{path}` does not exist on the host",
                    "create it or fix the path",
                )


def _root(paths: Paths, sandbox: DesiredSandbox) -> str:
    rootfs = sandbox.unit.rootfs
    return rootfs.path or os.path.join(paths.image_dir, rootfs.image or "")


def _command(paths: Paths, sandbox: DesiredSandbox) -> list[UnitProblem]:
    """The command must resolve inside the root (the image, or its persistent upper layer, where
    software installed inside a persistent sandbox lives), unless a mount the sandbox gets
    covers where it would be: what appears there only at run time cannot be checked."""
    if sandbox.unit.sandbox.command is None:
        return _init(paths, sandbox)
    command = sandbox.unit.sandbox.command[0]
    targets = [m.target.rstrip("/") + "/" for m in sandbox.unit.mount]
    candidates = [command] if "/" in command else [f"{d}/{command}" for d in _search(sandbox)]
    if any(c.startswith(t) for c in candidates for t in targets):
        return []
    layers = root_layers(paths, sandbox)
    if any(executable_in(layer, c) for layer in layers for c in candidates):
        return []
    where = (
        f"`{command}`" if "/" in command else f"`{command}` in PATH ({':'.join(_search(sandbox))})"
    )
    return [
        _problem(
            sandbox,
            "sandbox.command",
            f"{where} is not an executable file in the sandbox's root",
            "fix the command, or put it in the image",
        )
    ]


def root_layers(paths: Paths, sandbox: DesiredSandbox) -> list[str]:
    """Where what the sandbox's root holds at its start comes from: the image (or the rootfs
    path) and a persistent sandbox's upper layer, where what was installed inside it lives."""
    layers = [_root(paths, sandbox)]
    if sandbox.unit.rootfs.persistent:
        layers.append(os.path.join(paths.persistent_dir(sandbox.name), "upper"))
    return layers


def boot_init(paths: Paths, sandbox: DesiredSandbox) -> str | None:
    """The init a booted sandbox runs: the first of booting.INIT_PATHS that is an executable
    file in its root, resolved there (symlinks of the image stay inside it); None if none is."""
    layers = root_layers(paths, sandbox)
    found = (path for path in INIT_PATHS for layer in layers if executable_in(layer, path))
    return next(found, None)


def _init(paths: Paths, sandbox: DesiredSandbox) -> list[UnitProblem]:
    if boot_init(paths, sandbox) is not None:
        return []
    return [
        _problem(
            sandbox,
            "sandbox.boot",
            f"the root has no init to boot: none of {', '.join(INIT_PATHS)} is an executable file",
            "boot an image with an init (systemd: mmdebstrap --include=systemd), or give a command "
            "instead of boot",
        )
    ]


def _search(sandbox: DesiredSandbox) -> tuple[str, ...]:
    path = sandbox.unit.sandbox.environment.get("PATH")
    return tuple(path.split(":")) if path else _DEFAULT_PATH


def executable_in(root: str, path: str) -> bool:
    """Resolved as the sandbox will see it: symlinks of the image stay inside its root."""
    from sandman.kernel import syscalls as sc

    try:
        root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fd = sc.openat2(root_fd, path.lstrip("/"), os.O_PATH, resolve=sc.RESOLVE_IN_ROOT)
    except OSError:
        return False
    finally:
        os.close(root_fd)
    try:
        mode = os.fstat(fd).st_mode
    finally:
        os.close(fd)
    return stat.S_ISREG(mode) and bool(mode & 0o111)


class _HostPorts:
    """The host's bound ports, read from /proc/net once per check, when a sandbox forwards one:
    about 7 ms for the four tables here, which an apply of a hundred sandboxes with ports paid a
    hundred times."""

    def __init__(self) -> None:
        self._bound: list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address, int]] = []
        self._read = False

    def bound(self) -> list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
        if not self._read:
            self._bound, self._read = _bound_ports(), True
        return self._bound


def _ports(sandbox: DesiredSandbox, ports: _HostPorts) -> Iterator[UnitProblem]:
    if sandbox.unit.network is None or not sandbox.unit.network.ports:
        return
    bound = ports.bound()
    for index, port in enumerate(sandbox.unit.network.ports):
        for protocol, address, number in bound:
            if protocol != port.protocol or number != port.host:
                continue
            wanted = port.host_address
            if wanted is None or address.is_unspecified or str(address) == str(wanted):
                yield _problem(
                    sandbox,
                    f"network.ports[{index}].host",
                    f"{port.protocol} port {port.host} is already served on the host "
                    f"({address}:{number}); the forward would hide that service",
                    "pick another host port, or stop the service that listens there",
                )
                break


def _bound_ports() -> list[tuple[str, ipaddress.IPv4Address | ipaddress.IPv6Address, int]]:
    """(protocol, local address, port) of every listening TCP and bound UDP socket of the
    host's network namespace, from /proc/net."""
    found = []
    for protocol, table, state in (
        ("tcp", "tcp", _TCP_LISTEN),
        ("tcp", "tcp6", _TCP_LISTEN),
        ("udp", "udp", _UDP_BOUND),
        ("udp", "udp6", _UDP_BOUND),
    ):
        try:
            with open(f"/proc/net/{table}", encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) > 3 and fields[3] == state:
                address, _, port = fields[1].partition(":")
                found.append((protocol, _proc_address(address), int(port, 16)))
    return found


def _proc_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """/proc/net writes addresses as host-order 32-bit words in hex."""
    words = bytes.fromhex(text)
    ordered = b"".join(words[i : i + 4][::-1] for i in range(0, len(words), 4))
    return ipaddress.ip_address(ordered)


def _network(paths: Paths, network: DesiredNetwork) -> Iterator[UnitProblem]:
    ours = f"{paths.tag}b-"
    section = network.unit.network
    subnets = [("network.subnet", ipaddress.ip_network(str(section.subnet)))]
    if section.subnet6:
        subnets.append(("network.subnet6", ipaddress.ip_network(str(section.subnet6))))
    for key, subnet in subnets:
        for what, taken in _host_networks(ours):
            if taken.version == subnet.version and taken.overlaps(subnet):
                yield _problem(
                    network,
                    key,
                    f"{subnet} overlaps {what} {taken} of this host",
                    "pick a subnet the host does not use (`ip route`, `ip addr` show what it does)",
                )
                break


def _host_networks(
    ours: str,
) -> Iterator[tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    """Addresses (as their networks) and routes of the host's links, but those of loopback and
    of sandman's own bridges of this instance (prefix `ours`), and default routes."""
    from sandman.kernel import net_dump

    names = _link_names()
    for index, interfaces in net_dump.dump_addresses().items():
        name = names.get(index, "")
        if name == "lo" or name.startswith(ours):
            continue
        for interface in interfaces:
            if not interface.ip.is_link_local:
                yield f"the address on {name or index}", interface.network
    yield from _routes(ours)


def _link_names() -> dict[int, str]:
    names = {}
    for name in os.listdir("/sys/class/net"):
        try:
            with open(f"/sys/class/net/{name}/ifindex", encoding="ascii") as handle:
                names[int(handle.read())] = name
        except (OSError, ValueError):
            continue
    return names


def _routes(ours: str) -> Iterator[tuple[str, ipaddress.IPv4Network]]:
    """The main table's IPv4 routes, from /proc/net/route."""
    try:
        with open("/proc/net/route", encoding="ascii") as handle:
            rows = handle.read().splitlines()[1:]
    except OSError:
        return
    for row in rows:
        fields = row.split()
        if len(fields) < 8 or fields[0] == "lo" or fields[0].startswith(ours):
            continue
        destination, mask = (_proc_address(f) for f in (fields[1], fields[7]))
        route = ipaddress.ip_network(f"{destination}/{mask}", strict=False)
        if route.prefixlen > 0 and isinstance(route, ipaddress.IPv4Network):
            yield f"the route via {fields[0]}", route
