"""The unit models: one source of truth for every key, its type, its default and its schema.

Models are immutable and fail closed: unknown keys and wrong types are errors, never ignored.
Checks that involve more than one key live in `checks.py`, where they can name the exact key.
"""

from __future__ import annotations

import ipaddress
import typing
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
from sandman.syscall_table import NAMES as SYSCALL_NAMES
from sandman.units import scalars
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

KINDS = ("sandbox", "network", "slice")
# The slice every slice path starts from; its cgroup is the instance's base (the kernel's
# driver takes slice paths below it, and never needs this name).
ROOT_SLICE = "sandman"
# What a sandbox gets when its unit says nothing (README, `NAME.sandbox.toml`).
# 4096 processes and threads: far above what a service runs, yet a fork bomb stops at an eighth
# of the kernel's default pid_max (32768), so a few runaway sandboxes cannot take the host's
# last PIDs. podman used 4096 (now 2048); nspawn's 16384 is sized for booting a whole OS.
DEFAULT_PIDS_MAX = 4096
# /dev/shm as Docker makes it: 64M, where a bare tmpfs would take half of the host's RAM.
DEFAULT_SHM_SIZE = 64 * 1024**2
# The least each limit may be, of a sandbox or a slice (checks.py refuses less, saying why).
# Memory: starting a busybox sandbox takes about 3 MiB of its cgroup (the first child, a fork of
# apply, is charged for the pages it touches; kernel memory counts too), and under that the start
# fails; a live update below what a sandbox uses is refused (EBUSY, v1) or OOM-kills it (v2).
# 6 MiB is twice that, and the floor of Docker and podman ("Minimum memory limit allowed is
# 6MB"), so a limit that works there works here. memory_high below it throttles the start.
MEMORY_MIN = 6 * 1024**2
# Tasks: sandman's first child and the init are both in the cgroup while the init is forked.
PIDS_MIN = 2
# CPU: the kernel refuses a CFS quota under 1 ms per period (kernel/cgroup_common.py's
# CPU_QUOTA_MIN_US, not imported: validate stays off the kernel side), 1% of the 100 ms period.
CPU_MAX_MIN = 1.0
# TOML arrays arrive as lists; the models hold tuples (immutable) but keep their items strict.
LAX = Strict(False)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _parse_string(value: Any, pattern_name: str, check: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{scalars.type_name(value)} is not {pattern_name}; write a string")
    result: str = check(value)
    return result


def _hostname(value: Any) -> str:
    def check(text: str) -> str:
        if len(text) > 64 or not scalars.HOSTNAME_RE.fullmatch(text):
            raise ValueError(
                f"{text!r} is not a valid hostname; use letters, digits, '-' and '.', at most 64 "
                "characters"
            )
        return text

    return _parse_string(value, "a hostname", check)


def _image(value: Any) -> str:
    def check(text: str) -> str:
        if not scalars.IMAGE_RE.fullmatch(text) or len(text) > 64:
            raise ValueError(
                f"{text!r} is not an image name; use lowercase letters, digits, '.', '_' and '-' "
                "(an image is a directory under the image dir; for any other directory use `path`)"
            )
        return text

    return _parse_string(value, "an image name", check)


def _user(value: Any) -> str:
    def check(text: str) -> str:
        parts = text.split(":")
        # isascii: str.isdigit() also takes "²" and "٣", which int() or the kernel refuse.
        numeric = all(p.isascii() and p.isdigit() for p in parts)
        if len(parts) > 2 or not numeric or not all(int(p) <= ID_MAX for p in parts):
            raise ValueError(
                f'{text!r} is not a user; write "UID:GID" with numbers, e.g. "1000:1000"'
            )
        uid = parts[0]
        gid = parts[1] if len(parts) == 2 else parts[0]
        return f"{int(uid)}:{int(gid)}"

    return _parse_string(value, "a user", check)


def _ifname(value: Any) -> str:
    def check(text: str) -> str:
        if len(text) > scalars.IFNAME_MAX and scalars.IFNAME_RE.fullmatch(text):
            raise ValueError(
                f"{text!r} is {len(text)} characters long; the kernel takes interface names of "
                f"at most {scalars.IFNAME_MAX}"
            )
        if len(text) > scalars.IFNAME_MAX or not scalars.IFNAME_RE.fullmatch(text):
            raise ValueError(
                f"{text!r} is not a valid interface name; use at most {scalars.IFNAME_MAX} "
                "letters, digits, '-', '_' or '.'"
            )
        return text

    return _parse_string(value, "an interface name", check)


def _env_name(value: Any) -> str:
    def check(text: str) -> str:
        if not scalars.ENV_NAME_RE.fullmatch(text):
            raise ValueError(
                f"{text!r} is not an environment variable name; use letters, digits and '_', "
                "not starting with a digit"
            )
        return text

    return _parse_string(value, "a variable name", check)


def _no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\0" in value:
        raise ValueError(
            "the string holds a NUL byte, which no command line or environment can carry"
        )
    return value


def _ip_parser(kind: type, auto: bool, what: str, example: str) -> Any:
    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(
                f"{scalars.type_name(value)} is not {what}; write a string, e.g. {example!r}"
            )
        if auto and value == "auto":
            return value
        try:
            kind(value)
            # Kept as written: "10.88.0.10" without a prefix takes its network's prefix later.
            return value.strip()
        except ValueError as exc:
            choices = f'{example!r} or "auto"' if auto else repr(example)
            raise ValueError(f"{value!r} is not {what} ({exc}); write e.g. {choices}") from None

    return parse


def _subnet_parser(kind: type, example: str, other_key: str) -> Any:
    def parse(value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"{scalars.type_name(value)} is not a subnet; write e.g. {example!r}")
        try:
            return str(kind(value, strict=True))
        except ValueError as exc:
            try:
                fixed = kind(value, strict=False)
            except ValueError:
                _other_family(value, kind, example, other_key)
                raise ValueError(
                    f"{value!r} is not a subnet ({exc}); write e.g. {example!r}"
                ) from None
            raise ValueError(
                f"{value!r} has host bits set; write the network address, {str(fixed)!r}"
            ) from None

    return parse


def _other_family(value: str, kind: type, example: str, other_key: str) -> None:
    """A subnet of the other IP version is a key mix-up, not a typo: say where it belongs."""
    try:
        version = ipaddress.ip_network(value, strict=False).version
    except ValueError:
        return
    if version != kind(example).version:
        raise ValueError(
            f"{value!r} is an IPv{version} subnet; write an IPv{kind(example).version} one here, "
            f"e.g. {example!r}, and IPv{version} in {other_key}"
        )


def _file_mode(value: Any) -> int:
    if scalars.is_int(value) and 0 <= value <= 0o7777:
        return int(value)
    if (
        isinstance(value, str)
        and value.isdigit()
        and set(value) <= set("01234567")
        and len(value) <= 4
    ):
        return int(value, 8)
    shown = repr(value) if isinstance(value, str) or scalars.is_int(value) else None
    raise ValueError(
        f"{shown or scalars.type_name(value)} is not a file mode; write octal digits, e.g. "
        '"1777" or 0o755'
    )


def _capabilities(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if value in PRESETS:
            return value
        raise ValueError(
            f'{value!r} is not a capability set; write "default", "os" or a list such as '
            '["CAP_NET_BIND_SERVICE"]'
        )
    if not isinstance(value, list):
        raise ValueError(
            f'{scalars.type_name(value)} is not a capability set; write "default", "os" or a list'
        )
    # Every unknown item at once: fixing one typo per run would take a run per typo.
    unknown = [item for item in value if not isinstance(item, str) or item not in CAPABILITIES]
    if unknown:
        raise ValueError(_unknown_capabilities(unknown))
    return tuple(sorted(set(value), key=CAPABILITIES.__getitem__))


def _unknown_capabilities(items: list[Any]) -> str:
    shown = ", ".join(repr(i) if isinstance(i, str) else scalars.type_name(i) for i in items)
    what = "is not a Linux capability" if len(items) == 1 else "are not Linux capabilities"
    guesses = [(i, g) for i in items if (g := _nearest_capability(i))]
    if len(items) == 1 and guesses:
        hint = f"did you mean {guesses[0][1]!r}?"
    elif guesses:
        hint = "did you mean " + ", ".join(f"{g!r} for {i!r}" for i, g in guesses) + "?"
    else:
        hint = "names look like 'CAP_NET_BIND_SERVICE'"
    return f"{shown} {what}; {hint}"


def _nearest_capability(item: object) -> str | None:
    import difflib

    if not isinstance(item, str):
        return None
    guess = item.upper()
    guess = guess if guess.startswith("CAP_") else f"CAP_{guess}"
    if guess in CAPABILITIES:
        return guess
    close = difflib.get_close_matches(guess, CAPABILITIES, n=1)
    return close[0] if close else None


def _syscall_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(
            f"{scalars.type_name(value)} is not a list of system calls; write e.g. "
            '["io_uring_setup"]'
        )
    # Every unknown name at once, as for capabilities.
    unknown = [item for item in value if not isinstance(item, str) or item not in SYSCALL_NAMES]
    if unknown:
        raise ValueError(_unknown_syscalls(unknown))
    return tuple(sorted(set(value)))  # in any order, once: a reordered list changes nothing


def _unknown_syscalls(items: list[Any]) -> str:
    import difflib

    shown = ", ".join(repr(i) if isinstance(i, str) else scalars.type_name(i) for i in items)
    what = "is not a system call" if len(items) == 1 else "are not system calls"
    guesses = [
        (i, close[0])
        for i in items
        if isinstance(i, str) and (close := difflib.get_close_matches(i, SYSCALL_NAMES, 1, 0.75))
    ]
    if len(items) == 1 and guesses:
        hint = f"did you mean {guesses[0][1]!r}?"
    elif guesses:
        hint = "did you mean " + ", ".join(f"{g!r} for {i!r}" for i, g in guesses) + "?"
    else:
        hint = "names are those of syscalls(2), e.g. 'io_uring_setup'"
    return f"{shown} {what} of x86_64 or aarch64 Linux; {hint}"


def _count_or_max(value: Any) -> Any:
    """A limit count, or "max" (no limit), held as None as the cgroup drivers take it."""
    if value == "max":
        return None
    if isinstance(value, str):
        raise ValueError(f'{value!r} is not a count; write an integer, e.g. 512, or "max"')
    return value


def _size_or_max(value: Any) -> int | str:
    if value == "max":
        return "max"
    try:
        size = scalars.parse_size(value)
    except ValueError as exc:
        raise ValueError(f'{exc}, or "max"') from None
    if size == 0:
        raise ValueError('0 bytes is no room at all; write a size, e.g. "64M", or "max"')
    return size


_STR_SCHEMA = {"type": "string"}
Hostname = Annotated[str, BeforeValidator(_hostname), WithJsonSchema(_STR_SCHEMA)]
ImageName = Annotated[
    str,
    BeforeValidator(_image),
    WithJsonSchema({"type": "string", "pattern": scalars.IMAGE_RE.pattern}),
]
UserSpec = Annotated[
    str, BeforeValidator(_user), WithJsonSchema({"type": "string", "pattern": r"^\d+(:\d+)?$"})
]
IfName = Annotated[
    str,
    BeforeValidator(_ifname),
    WithJsonSchema({"type": "string", "maxLength": scalars.IFNAME_MAX}),
]
EnvName = Annotated[str, BeforeValidator(_env_name)]
PlainText = Annotated[str, BeforeValidator(_no_nul)]
Address4 = Annotated[
    str,
    BeforeValidator(_ip_parser(ipaddress.IPv4Interface, True, "an IPv4 address", "10.88.0.10/24")),
    WithJsonSchema(_STR_SCHEMA),
]
Address6 = Annotated[
    str,
    BeforeValidator(_ip_parser(ipaddress.IPv6Interface, True, "an IPv6 address", "fd00:88::10/64")),
    WithJsonSchema(_STR_SCHEMA),
]
HostAddress = Annotated[
    str,
    BeforeValidator(_ip_parser(ipaddress.ip_address, False, "an IP address", "127.0.0.1")),
    WithJsonSchema(_STR_SCHEMA),
]
Gateway4 = Annotated[
    str,
    BeforeValidator(_ip_parser(ipaddress.IPv4Address, False, "an IPv4 address", "10.88.0.1")),
    WithJsonSchema(_STR_SCHEMA),
]
Gateway6 = Annotated[
    str,
    BeforeValidator(_ip_parser(ipaddress.IPv6Address, False, "an IPv6 address", "fd00:88::1")),
    WithJsonSchema(_STR_SCHEMA),
]
Subnet4 = Annotated[
    str,
    BeforeValidator(_subnet_parser(ipaddress.IPv4Network, "10.88.0.0/24", "subnet6")),
    WithJsonSchema(_STR_SCHEMA),
]
Subnet6 = Annotated[
    str,
    BeforeValidator(_subnet_parser(ipaddress.IPv6Network, "fd00:88::/64", "subnet")),
    WithJsonSchema(_STR_SCHEMA),
]
FileMode = Annotated[
    int,
    BeforeValidator(_file_mode),
    PlainSerializer(lambda m: f"{m:04o}", return_type=str),
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
    BeforeValidator(_capabilities),
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
    BeforeValidator(_syscall_names),
    WithJsonSchema({"type": "array", "items": {"type": "string", "pattern": "^[a-z_][a-z0-9_]*$"}}),
]
PidsMax = Annotated[
    Annotated[int, Field(ge=1)] | None,
    BeforeValidator(_count_or_max),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 1}, {"const": "max"}]}),
]
ShmSize = Annotated[
    int | Literal["max"] | None,
    BeforeValidator(_size_or_max),
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
        if self.shm_size is None:
            return DEFAULT_SHM_SIZE
        return None if self.shm_size == "max" else self.shm_size


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
        """What a booted sandbox gets where its unit says nothing, set as if written, so that
        the canonical unit, the plan and the record all show it (see BOOT_DEFAULTS)."""
        if not isinstance(data, dict) or not isinstance(data.get("sandbox"), dict):
            return data
        if data["sandbox"].get("boot") is not True:
            return data
        filled = {**data, "sandbox": {**data["sandbox"]}}
        for (table, key), value in BOOT_DEFAULTS.items():
            section = filled.get(table, {})
            if not isinstance(section, dict):
                continue  # the model refuses it, naming the key
            filled[table] = {key: value, **section}
        return filled

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


# The keys whose default differs when `sandbox.boot` is true, and that default: systemd-nspawn's
# capability set and a seccomp profile systemd lives with ("os"), and systemd's halt request as
# the stop signal, which it answers by a clean shutdown.
BOOT_DEFAULTS: dict[tuple[str, str], str] = {
    ("security", "capabilities"): "os",
    ("security", "seccomp"): "os",
    ("sandbox", "stop_signal"): "SIGRTMIN+3",
}

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
