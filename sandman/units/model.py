"""The unit models: one source of truth for every key, its type, its default and its schema.

Models are immutable and fail closed: unknown keys and wrong types are errors, never ignored.
Checks that involve more than one key live in `checks.py`, where they can name the exact key.
"""

from __future__ import annotations

import ipaddress
import typing
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    Strict,
    WithJsonSchema,
    model_validator,
)
from pydantic.fields import FieldInfo

from sandman.capabilities import CAPABILITIES, PRESETS
from sandman.units import parsers, scalars
from sandman.units.constants import (
    DEFAULT_PIDS_MAX,
    ROOT_SLICE,
)
from sandman.units.scalars import ID_MAX
from sandman.units.values import (
    AbsolutePath,
    CpuPercent,
    Duration,
    SignedDuration,
    Size,
    StopSignal,
    UnitName,
)

# TOML arrays arrive as lists; the models hold tuples (immutable) but keep their items strict.
LAX = Strict(False)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


_STR_SCHEMA = {"type": "string"}
Hostname = Annotated[str, BeforeValidator(parsers.hostname), WithJsonSchema(_STR_SCHEMA)]
ImageName = Annotated[
    str,
    BeforeValidator(parsers.image),
    WithJsonSchema({"type": "string", "pattern": scalars.IMAGE_RE.pattern}),
]
UserSpec = Annotated[
    str,
    BeforeValidator(parsers.user),
    WithJsonSchema({"type": "string", "pattern": r"^\d+(:\d+)?$"}),
]
IfName = Annotated[
    str,
    BeforeValidator(parsers.ifname),
    WithJsonSchema({"type": "string", "maxLength": scalars.IFNAME_MAX}),
]
EnvName = Annotated[str, BeforeValidator(parsers.env_name)]
PlainText = Annotated[str, BeforeValidator(parsers.no_nul)]
Address4 = Annotated[
    str,
    BeforeValidator(
        partial(
            parsers.ip_address, ipaddress.IPv4Interface, True, "an IPv4 address", "10.88.0.10/24"
        )
    ),
    WithJsonSchema(_STR_SCHEMA),
]
Address6 = Annotated[
    str,
    BeforeValidator(
        partial(
            parsers.ip_address, ipaddress.IPv6Interface, True, "an IPv6 address", "fd00:88::10/64"
        )
    ),
    WithJsonSchema(_STR_SCHEMA),
]
HostAddress = Annotated[
    str,
    BeforeValidator(
        partial(parsers.ip_address, ipaddress.ip_address, False, "an IP address", "127.0.0.1")
    ),
    WithJsonSchema(_STR_SCHEMA),
]
Gateway4 = Annotated[
    str,
    BeforeValidator(
        partial(parsers.ip_address, ipaddress.IPv4Address, False, "an IPv4 address", "10.88.0.1")
    ),
    WithJsonSchema(_STR_SCHEMA),
]
Gateway6 = Annotated[
    str,
    BeforeValidator(
        partial(parsers.ip_address, ipaddress.IPv6Address, False, "an IPv6 address", "fd00:88::1")
    ),
    WithJsonSchema(_STR_SCHEMA),
]
Subnet4 = Annotated[
    str,
    BeforeValidator(partial(parsers.subnet, ipaddress.IPv4Network, "10.88.0.0/24", "subnet6")),
    WithJsonSchema(_STR_SCHEMA),
]
Subnet6 = Annotated[
    str,
    BeforeValidator(partial(parsers.subnet, ipaddress.IPv6Network, "fd00:88::/64", "subnet")),
    WithJsonSchema(_STR_SCHEMA),
]
FileMode = Annotated[
    int,
    BeforeValidator(parsers.file_mode),
    PlainSerializer(parsers.file_mode_text, return_type=str),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 0, "maximum": 0o7777},
                {"type": "string", "pattern": "^[0-7]{1,4}$"},
            ]
        }
    ),
]
Capabilities = Annotated[
    str | tuple[str, ...],
    BeforeValidator(parsers.capabilities),
    WithJsonSchema(
        {
            "anyOf": [
                {"enum": sorted(PRESETS)},
                {"type": "array", "items": {"enum": list(CAPABILITIES)}},
            ]
        }
    ),
]
SyscallNames = Annotated[
    tuple[str, ...],
    BeforeValidator(parsers.syscall_names),
    WithJsonSchema({"type": "array", "items": {"type": "string", "pattern": "^[a-z_][a-z0-9_]*$"}}),
]
PidsMax = Annotated[
    Annotated[int, Field(ge=1)] | None,
    BeforeValidator(parsers.count_or_max),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1}, {"const": "max"}]}),
]
ShmSize = Annotated[
    int | Literal["max"] | None,
    BeforeValidator(parsers.size_or_max),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": r"^\s*\d+\s*[KMGTkmgt]?\s*$"},
                {"const": "max"},
            ],
            "description": 'a size, e.g. "64M", or "max": the kernel\'s tmpfs default, half of RAM',
        }
    ),
]
Id = Annotated[int, Field(ge=0, le=ID_MAX)]
Port = Annotated[int, Field(ge=1, le=65535)]
Weight = Annotated[int, Field(ge=1, le=10000)]


class Limits(Section):
    """Cgroup limits, shared by a slice and a sandbox's own cgroup; absent means no limit."""

    memory_max: Size | None = None
    memory_high: Size | None = None
    cpu_max: CpuPercent | None = None
    cpu_weight: Weight | None = None
    pids_max: PidsMax = None
    io_weight: Weight | None = None


class Resources(Limits):
    """A sandbox's `[resources]`: its cgroup's limits, with a default PID limit, and the size of
    its /dev/shm."""

    pids_max: PidsMax = DEFAULT_PIDS_MAX
    # None is the default, DEFAULT_SHM_SIZE: kept out of the canonical unit so that sandboxes
    # applied before this key existed are not recreated for it (it is not live).
    shm_size: ShmSize = None

    def shm_bytes(self) -> int | None:
        """The /dev/shm tmpfs size in bytes; None: the kernel's default (half of RAM)."""
        return parsers.shm_bytes(self.shm_size)


class SandboxSection(Section):
    description: PlainText = ""
    # Required unless `boot` (checks.py says so, naming the key): a booted sandbox runs the
    # image's own init.
    command: Annotated[tuple[PlainText, ...], Field(min_length=1), LAX] | None = None
    # None is false. None, not false: a record of a sandbox applied before this key existed
    # lacks it, which the planner reads as None, so no change (and no recreate).
    boot: bool | None = None
    hostname: Hostname | None = None
    slice: UnitName = ROOT_SLICE
    environment: dict[EnvName, PlainText] = Field(default_factory=dict)
    user: UserSpec = "0:0"
    working_directory: AbsolutePath = "/"
    restart: Literal["no", "on-failure", "always"] = "no"
    stop_timeout: Duration = 5 * 10**9
    # None: SIGTERM (SIGRTMIN+3 when booting). None, not the name: a record of a sandbox applied
    # before this key existed lacks it, which the planner reads as None, so no change.
    stop_signal: StopSignal | None = None


class Rootfs(Section):
    image: ImageName | None = None
    path: AbsolutePath | None = None
    mode: Literal["overlay", "bind", "read-only"] = "overlay"
    persistent: bool = False


class Namespaces(Section):
    pid: bool = True
    mount: bool = True
    uts: bool = True
    ipc: bool = True
    net: bool = True
    user: bool = True
    cgroup: bool = True
    time: bool = False


class TimeOffsets(Section):
    monotonic_offset: SignedDuration = 0
    boottime_offset: SignedDuration = 0


class IdRange(Section):
    inside: Id
    outside: Id
    count: Annotated[int, Field(ge=1, le=ID_MAX)]


class IdMap(Section):
    auto: bool = False
    uid: Annotated[tuple[IdRange, ...], LAX] = ()
    gid: Annotated[tuple[IdRange, ...], LAX] = ()


class BindMount(Section):
    type: Literal["bind"]
    source: AbsolutePath
    target: AbsolutePath
    read_only: bool = False


class TmpfsMount(Section):
    type: Literal["tmpfs"]
    target: AbsolutePath
    size: Size | None = None
    mode: FileMode = 0o755
    read_only: bool = False


class ProcMount(Section):
    type: Literal["proc"]
    target: AbsolutePath


class OverlayMount(Section):
    type: Literal["overlay"]
    target: AbsolutePath
    lower: Annotated[tuple[AbsolutePath, ...], Field(min_length=1), LAX]
    upper: AbsolutePath | None = None
    read_only: bool = False


Mount = Annotated[BindMount | TmpfsMount | ProcMount | OverlayMount, Field(discriminator="type")]


class PortForward(Section):
    host: Port
    sandbox: Port
    protocol: Literal["tcp", "udp"] = "tcp"
    host_address: HostAddress | None = None


class SandboxNetwork(Section):
    attach: UnitName
    address: Address4 = "auto"
    address6: Address6 | None = None
    ports: Annotated[tuple[PortForward, ...], LAX] = ()


class Security(Section):
    capabilities: Capabilities = "default"
    no_new_privileges: bool = True
    seccomp: Literal["default", "os", "unconfined"] = "default"
    # None, not (): the canonical unit of a sandbox applied before these keys existed has none,
    # and an empty list there would recreate it.
    syscalls_allow: SyscallNames | None = None
    syscalls_deny: SyscallNames | None = None


class SandboxUnit(Section):
    """A `NAME.sandbox.toml` file."""

    @model_validator(mode="before")
    @classmethod
    def _boot_defaults(cls, data: Any) -> Any:
        return parsers.boot_defaults(data)

    sandbox: SandboxSection
    rootfs: Rootfs = Rootfs(image="busybox")
    namespaces: Namespaces = Namespaces()
    time: TimeOffsets | None = None
    idmap: IdMap | None = None
    mount: Annotated[tuple[Mount, ...], LAX] = ()
    network: SandboxNetwork | None = None
    resources: Resources = Resources()
    security: Security = Security()


class NetworkSection(Section):
    subnet: Subnet4
    subnet6: Subnet6 | None = None
    gateway: Gateway4 | None = None
    gateway6: Gateway6 | None = None
    nat: bool = False
    bridge: IfName | None = None


class NetworkUnit(Section):
    """A `NAME.network.toml` file."""

    network: NetworkSection


class SliceSection(Limits):
    parent: UnitName = ROOT_SLICE


class SliceUnit(Section):
    """A `NAME.slice.toml` file."""

    slice: SliceSection


UnitModel = SandboxUnit | NetworkUnit | SliceUnit
MODELS: dict[str, type[SandboxUnit] | type[NetworkUnit] | type[SliceUnit]] = {
    "sandbox": SandboxUnit,
    "network": NetworkUnit,
    "slice": SliceUnit,
}


def size_fields() -> frozenset[str]:
    """The names of the keys that hold a size in bytes (a Size field of any section): plan
    output shows their values as sizes (256M), read off the models rather than listed."""
    names: set[str] = set()
    sections: list[type[BaseModel]] = [Section]
    while sections:
        section = sections.pop()
        sections.extend(section.__subclasses__())
        names.update(name for name, field in section.model_fields.items() if _is_size(field))
    return frozenset(names)


def _is_size(field: FieldInfo) -> bool:
    # `Size | None` keeps Size in the annotation; a bare `Size` pydantic splits into int and its
    # validators.
    if Size in typing.get_args(field.annotation):
        return True
    return field.annotation is int and tuple(field.metadata) == typing.get_args(Size)[1:]
