"""Facts about the host, gathered once per run; the planner reads these and nothing else.

NamedTuples, not dataclasses: `status` imports this module, and dataclasses pull in `inspect`,
18 ms of a 100 ms status."""

# No `from __future__ import annotations`: typing compiles each string annotation of a
# NamedTuple at class creation (1.5 ms of every start for these classes' fields).
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

ObjectKey = tuple[str, str]  # (kind, name): ("sandbox", "web")
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class IdRanges(NamedTuple):
    """A user namespace's maps: (inside, outside, count) per line."""

    uid: tuple[tuple[int, int, int], ...] = ()
    gid: tuple[tuple[int, int, int], ...] = ()


class Runtime(NamedTuple):
    """What apply learned when it made an object: facts of the host, not of the unit. A
    sandbox's init and what it runs in, a network's bridge, a slice's cgroup; the fields of the
    other kinds keep their defaults."""

    pid: int = 0
    start_time: int = 0  # in clock ticks since boot, as /proc/PID/stat gives it
    started_at: float | None = None  # seconds since the epoch
    stopped_at: float | None = None  # `sandman stop` ended it, seconds since the epoch
    stop_status: int | None = None  # the wait status of the init that stop ended, if known
    cgroup: str | None = None  # relative to the cgroup root
    namespaces: Mapping[str, int] = _EMPTY  # name -> inode
    runtime_dir: str | None = None
    rootfs: str | None = None  # the image dir or path the root stands on
    upper: str | None = None  # an overlay root's upper dir
    log: str | None = None
    idmap: IdRanges | None = None
    auto_ids: int | None = None  # the first host id of an automatic range
    # The identity the running init took: an exec takes the same, whatever the unit says now.
    environment: Mapping[str, str] = _EMPTY
    user: str | None = None
    bridge: str | None = None
    # A booted sandbox's console keeper (kernel/console.py): a missing one is drift.
    keeper_pid: int = 0
    keeper_start_time: int = 0


class PortDeclared(NamedTuple):
    """A port forward of a sandbox, as recorded."""

    host: int
    sandbox: int
    protocol: str = "tcp"
    host_address: str | None = None


class SandboxDeclared(NamedTuple):
    """What a recorded sandbox unit says, as the code that observes, repairs, enters and shows
    the sandbox reads it: the unit format's defaults applied once, in observe/records.py."""

    description: str | None = None
    command: tuple[str, ...] = ()  # empty when it boots
    boot: bool = False
    machine_id: str | None = None  # a booted sandbox's (sandman/booting.py)
    user: str = "0:0"
    working_directory: str = "/"
    environment: Mapping[str, str] = _EMPTY
    restart: str = "no"
    stop_timeout: str = "5s"  # as written in the unit; stop_seconds reads it
    stop_signal: str | None = None  # the unit's, canonical; stop_signal_number resolves None
    slice: str | None = None
    image: str | None = None  # the image's name, or the root's path
    rootfs_mode: str = "overlay"
    namespaces: tuple[str, ...] = ()  # the ones enabled
    mount_targets: tuple[str, ...] = ()
    resources: Mapping[str, Any] = _EMPTY  # the limits as recorded (cpu_max may be "50%")
    capabilities: str | tuple[str, ...] = "default"
    seccomp: str = "default"
    syscalls_allow: tuple[str, ...] = ()
    syscalls_deny: tuple[str, ...] = ()
    no_new_privileges: bool = True
    network: str | None = None  # the network it is attached to
    ports: tuple[PortDeclared, ...] = ()
    address: str | None = None
    address6: str | None = None
    veth: str | None = None
    slice_path: str = ""

    def stop_signal_number(self) -> int:
        """The signal that asks the init to stop: the unit's, else SIGTERM."""
        from sandman.signals import signal_number  # only destroy pays for it

        return (signal_number(self.stop_signal) if self.stop_signal else 0) or 15

    def stop_seconds(self) -> float:
        from sandman.units.scalars import parse_duration_ns  # only destroy pays for it

        try:
            return parse_duration_ns(self.stop_timeout) / 1e9
        except ValueError:
            return 5.0


class NetworkDeclared(NamedTuple):
    """What a recorded network unit says, resolved."""

    subnet: str = "0.0.0.0/32"
    subnet6: str | None = None
    nat: bool = False
    bridge: str | None = None
    gateway: str | None = None
    gateway6: str | None = None


class SliceDeclared(NamedTuple):
    """What a recorded slice unit says, resolved."""

    limits: Mapping[str, Any] = _EMPTY
    path: str = ""


Declared = SandboxDeclared | NetworkDeclared | SliceDeclared


class Record(NamedTuple):
    """What sandman last applied for one object, as written under the state dir; made and read
    by observe/records.py alone."""

    kind: str
    name: str
    digest: str
    # The canonical unit as applied: what the digest hashes and the planner compares key by
    # key. Everything else reads the typed `declared`.
    unit: Mapping[str, Any]
    tainted: bool
    runtime: Runtime
    declared: Declared
    # `sandman stop` ended it and it stays so until `sandman start`: nothing of it runs, and
    # neither apply nor the daemon starts it (the runtime keeps only what a start reuses).
    stopped: bool = False
    # The unit file it was applied from, for errors of what runs it again from the record.
    file: str | None = None

    @property
    def key(self) -> ObjectKey:
        return (self.kind, self.name)

    @property
    def sandbox(self) -> SandboxDeclared:
        assert isinstance(self.declared, SandboxDeclared), f"{self.kind}/{self.name}"
        return self.declared

    @property
    def network(self) -> NetworkDeclared:
        assert isinstance(self.declared, NetworkDeclared), f"{self.kind}/{self.name}"
        return self.declared

    @property
    def slice(self) -> SliceDeclared:
        assert isinstance(self.declared, SliceDeclared), f"{self.kind}/{self.name}"
        return self.declared


class Drift(NamedTuple):
    """One way an object's live state differs from its record: what, expected, found."""

    what: str
    expected: str
    found: str

    def __str__(self) -> str:
        return f"{self.what}: expected {self.expected}, found {self.found}"


ORPHAN_KINDS = ("cgroup", "mount", "rule", "table", "link", "path")


class Orphan(NamedTuple):
    """Something with this instance's naming that no record owns (see observe/orphans.py)."""

    kind: str  # one of ORPHAN_KINDS
    # What removal needs: a cgroup rel path, "KIND OWNER" of rules, a link's name, a mount
    # point or path relative to the state dir.
    name: str
    what: str  # for the plan: why it is an orphan


class ActualState(NamedTuple):
    """Records, their drift and the orphans; `ActualState.empty()` when nothing is applied."""

    records: dict[ObjectKey, Record]
    drift: dict[ObjectKey, tuple[Drift, ...]]
    orphans: tuple[Orphan, ...] = ()
    # The (kind, owner) of every nf_tables rule of the instance seen, when the rules were read:
    # apply writes a new sandbox's port forwards without reading the table again when it had
    # none (a dump of the whole table for each made 1000 creates quadratic).
    rule_owners: frozenset[tuple[str, str]] | None = None

    @classmethod
    def empty(cls) -> "ActualState":
        return cls({}, {})

    def of_kind(self, kind: str) -> dict[str, Record]:
        return {name: record for (k, name), record in self.records.items() if k == kind}

    def addresses(self) -> dict[str, tuple[str | None, str | None]]:
        """The addresses the applied sandboxes got, so that "auto" keeps them (plan and apply
        both resolve with them: a plan must show what apply will do)."""
        kept: dict[str, tuple[str | None, str | None]] = {}
        for record in self.of_kind("sandbox").values():
            kept[record.name] = (record.sandbox.address, record.sandbox.address6)
        return kept
