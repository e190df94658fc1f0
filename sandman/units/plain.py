"""The unit models' values as plain classes: what the loader hands on, made by the
compiled validators (compiled.py) without pydantic. GENERATED from model.py by
`python -m sandman.units.plain_gen`: edit the models, never this file (a test compares).
"""

from __future__ import annotations

from typing import Literal

from sandman.units import parsers
from sandman.units.plain_base import Plain


class Limits(Plain):
    """Cgroup limits, shared by a slice and a sandbox's own cgroup; absent means no limit."""

    memory_max: int | None
    memory_high: int | None
    cpu_max: float | None
    cpu_weight: int | None
    pids_max: int | None
    io_weight: int | None


class Resources(Limits):
    """A sandbox's `[resources]`: its cgroup's limits, with a default PID limit, and the size of
    its /dev/shm."""

    shm_size: int | Literal["max"] | None

    def shm_bytes(self) -> int | None:
        """The /dev/shm tmpfs size in bytes; None: the kernel's default (half of RAM)."""
        return parsers.shm_bytes(self.shm_size)


class SandboxSection(Plain):
    description: str
    command: tuple[str, ...] | None
    boot: bool | None
    hostname: str | None
    slice: str
    environment: dict[str, str]
    user: str
    working_directory: str
    restart: Literal["no", "on-failure", "always"]
    stop_timeout: int
    stop_signal: str | None


class Rootfs(Plain):
    image: str | None
    path: str | None
    mode: Literal["overlay", "bind", "read-only"]
    persistent: bool


class Namespaces(Plain):
    pid: bool
    mount: bool
    uts: bool
    ipc: bool
    net: bool
    user: bool
    cgroup: bool
    time: bool


class TimeOffsets(Plain):
    monotonic_offset: int
    boottime_offset: int


class IdRange(Plain):
    inside: int
    outside: int
    count: int


class IdMap(Plain):
    auto: bool
    uid: tuple[IdRange, ...]
    gid: tuple[IdRange, ...]


class BindMount(Plain):
    type: Literal["bind"]
    source: str
    target: str
    read_only: bool


class TmpfsMount(Plain):
    type: Literal["tmpfs"]
    target: str
    size: int | None
    mode: int
    read_only: bool


class ProcMount(Plain):
    type: Literal["proc"]
    target: str


class OverlayMount(Plain):
    type: Literal["overlay"]
    target: str
    lower: tuple[str, ...]
    upper: str | None
    read_only: bool


class PortForward(Plain):
    host: int
    sandbox: int
    protocol: Literal["tcp", "udp"]
    host_address: str | None


class SandboxNetwork(Plain):
    attach: str
    address: str
    address6: str | None
    ports: tuple[PortForward, ...]


class Security(Plain):
    capabilities: str | tuple[str, ...]
    no_new_privileges: bool
    seccomp: Literal["default", "os", "unconfined"]
    syscalls_allow: tuple[str, ...] | None
    syscalls_deny: tuple[str, ...] | None


class SandboxUnit(Plain):
    """A `NAME.sandbox.toml` file."""

    sandbox: SandboxSection
    rootfs: Rootfs
    namespaces: Namespaces
    time: TimeOffsets | None
    idmap: IdMap | None
    mount: tuple[BindMount | TmpfsMount | ProcMount | OverlayMount, ...]
    network: SandboxNetwork | None
    resources: Resources
    security: Security


class NetworkSection(Plain):
    subnet: str
    subnet6: str | None
    gateway: str | None
    gateway6: str | None
    nat: bool
    bridge: str | None


class NetworkUnit(Plain):
    """A `NAME.network.toml` file."""

    network: NetworkSection


class SliceSection(Limits):
    parent: str


class SliceUnit(Plain):
    """A `NAME.slice.toml` file."""

    slice: SliceSection


# The unit of each kind.
UNITS: dict[str, type[SandboxUnit] | type[NetworkUnit] | type[SliceUnit]] = {
    "sandbox": SandboxUnit,
    "network": NetworkUnit,
    "slice": SliceUnit,
}
# The keys that hold a size in bytes (model.size_fields): a plan shows them as sizes.
SIZE_FIELDS = frozenset({"memory_high", "memory_max", "size"})
